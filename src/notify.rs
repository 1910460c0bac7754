//! systemd service notifications (`sd_notify`): readiness, reload, watchdog pings, stopping.
//!
//! A few lines of datagram code instead of the `sd-notify` crate (0.5, looked at for issue
//! 12), which reads `$NOTIFY_SOCKET` and opens a socket on every call and cannot be pointed
//! at a given socket: the tests would have to set the process-wide variable under parallel
//! test threads, and a missing socket would be looked up again at every watchdog ping. The
//! protocol is one `AF_UNIX` datagram of newline-separated `KEY=value` assignments sent to
//! the socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` for an abstract socket). systemd sets it only for `Type=notify` units;
//! without it [`Notifier::from_env`] gives `None` and the caller has nothing to do, so
//! `gateway run` from a shell, a test or a container behaves exactly as before.
//!
//! # Readiness
//! With `Type=notify`, `systemctl start street-gateway` (and every unit ordered after it)
//! waits until the gateway says [`Notifier::ready`], and fails the start if the process exits
//! first or `TimeoutStartSec=` passes. The gateway says it once the config and model were
//! validated, the outbox is open and the camera tasks are started: from then on an incident
//! cannot be lost, even though cameras may still be connecting (a camera that never connects
//! is a health state, not a failed start). [`Notifier::status`] sets the one-line text shown
//! by `systemctl status`.
//!
//! # Reload
//! `systemctl reload` sends `SIGHUP` (the unit's `ExecReload=`). The gateway says
//! [`Notifier::reloading`] when it starts re-reading its config and [`Notifier::ready`] again
//! when it has applied it or refused it (keeping the running one), so systemd shows the unit as
//! `reloading` meanwhile. systemd 253+ wants `MONOTONIC_USEC` beside `RELOADING=1`; 252
//! (Debian 12) ignores it.
//!
//! # Watchdog
//! With `WatchdogSec=60` systemd passes `WATCHDOG_USEC=60000000` and expects a
//! [`Notifier::watchdog_ping`] at least that often; when one is missing it kills the gateway
//! with `SIGABRT` and `Restart=on-failure` starts it again. Ping every
//! [`ping_period`] (half the interval, so one late turn is not fatal).
//!
//! **The contract for the caller**: the ping must prove the work is moving, not merely that
//! the process exists. So it is sent only from the run loop itself (the loop that consumes
//! analysed frames, never from a timer task of its own, which would go on pinging while that
//! loop hangs), and only when the detector made progress since the last ping or was not
//! offered any work (all cameras offline is a health state, not a hang: restarting would not
//! bring them back). A loop that stops turning, or a detector that takes frames and returns
//! nothing, misses its pings and is restarted within one to two watchdog intervals.
//!
//! # Stopping
//! [`Notifier::stopping`] on `SIGTERM`, before the drain, so `systemctl status` shows
//! `deactivating` while camera tasks and delivery wind down (bounded by `TimeoutStopSec=`).
//!
//! Sending never fails the caller: a lost notification is logged once at `warn` (then at
//! `debug`) and otherwise ignored. The environment is left as it is: the gateway spawns no
//! children that could inherit `NOTIFY_SOCKET`.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A connection to systemd's notification socket (or to a test's).
#[derive(Debug)]
pub struct Notifier {
    /// Unbound datagram socket that each message is sent from.
    socket: UnixDatagram,
    /// Where messages go: the `$NOTIFY_SOCKET` path or abstract name.
    address: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    address_text: String,
    /// The watchdog interval systemd asked of this process, if any.
    watchdog: Option<Duration>,
    /// Whether a failed send was already logged at `warn`.
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier systemd asked for through `$NOTIFY_SOCKET`, with the watchdog interval of
    /// `$WATCHDOG_USEC` / `$WATCHDOG_PID`; `None` when the gateway is not run as a
    /// `Type=notify` service (the variable is unset or empty) or the socket cannot be used
    /// (logged at `warn`).
    pub fn from_env() -> Option<Notifier> {
        let notify_socket = std::env::var("NOTIFY_SOCKET").ok().filter(|value| !value.is_empty())?;
        let watchdog = watchdog_interval_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match Notifier::to_socket(&notify_socket) {
            Ok(notifier) => Some(Notifier { watchdog, ..notifier }),
            Err(error) => {
                tracing::warn!(
                    notify_socket = %notify_socket,
                    error = %error,
                    "NOTIFY_SOCKET is set but unusable: systemd will not hear that the gateway is ready"
                );
                None
            }
        }
    }

    /// A notifier sending to `notify_socket`, written as in `$NOTIFY_SOCKET`: an absolute path,
    /// or `@name` for an abstract socket. No watchdog interval (tests, and callers that know
    /// their own). Fails when the address is neither, or no datagram socket can be made.
    pub fn to_socket(notify_socket: &str) -> io::Result<Notifier> {
        let address = if let Some(name) = notify_socket.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if notify_socket.starts_with('/') {
            SocketAddr::from_pathname(notify_socket)?
        } else {
            // systemd 254+ may also pass `vsock:…` (to VMs); nothing this gateway runs under.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported notification socket address {notify_socket:?}: expected a path or @name"),
            ));
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            address,
            address_text: notify_socket.to_string(),
            watchdog: None,
            warned: AtomicBool::new(false),
        })
    }

    /// `READY=1`: start-up finished (outbox open, camera tasks started), or a reload finished.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=<CLOCK_MONOTONIC µs>`: a config reload began; follow
    /// it with [`Notifier::ready`] whether the new config was applied or refused.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`: shutdown began (say it before draining, not after).
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `STATUS=<text>`: the one line `systemctl status` shows. Newlines in `text` become
    /// spaces, so a status can never carry another assignment (such as `READY=1`).
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
    }

    /// `WATCHDOG=1`: the work loop is turning and the detector is making progress. See the
    /// module docs for when to call it; calling it from anywhere else defeats the watchdog.
    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    /// The watchdog interval systemd enforces on this process (`WATCHDOG_USEC`, when
    /// `WATCHDOG_PID` is unset or ours), or `None` when there is no watchdog to feed.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one datagram; failures are logged (at `warn` the first time) and swallowed.
    fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.address) {
            Ok(_) => tracing::trace!(notify_socket = %self.address_text, message, "sd_notify sent"),
            Err(error) => {
                let first = !self.warned.swap(true, Ordering::Relaxed);
                if first {
                    tracing::warn!(
                        notify_socket = %self.address_text,
                        message,
                        error = %error,
                        "cannot notify systemd (logged once; later failures at debug)"
                    );
                } else {
                    tracing::debug!(notify_socket = %self.address_text, message, error = %error, "cannot notify systemd");
                }
            }
        }
    }
}

/// How often to send [`Notifier::watchdog_ping`] for a watchdog of `watchdog`: half of it, as
/// `sd_watchdog_enabled(3)` recommends, so one slow turn of the loop does not cost a restart.
pub fn ping_period(watchdog: Duration) -> Duration {
    watchdog / 2
}

/// The watchdog interval from the values of `WATCHDOG_USEC` and `WATCHDOG_PID` (each `None`
/// when unset), for the process `our_pid`. `None` when there is no usable interval (unset,
/// not a number, 0) or the watchdog is meant for another process (`WATCHDOG_PID` set and not
/// `our_pid`, as after a fork; an unparsable `WATCHDOG_PID` counts as another process).
pub fn watchdog_interval_from(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = watchdog_usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = watchdog_pid {
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
/// `std::time::Instant` reads the same clock but does not expose its value; rustix's safe
/// `clock_gettime` does (it is already in the tree through tempfile).
fn monotonic_usec() -> u64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (time.tv_sec as u64) * 1_000_000 + (time.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receives one datagram as text.
    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let length = socket.recv(&mut buffer).expect("a datagram within the read timeout");
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    /// Every notification, in order, as the exact datagrams systemd would receive.
    fn assert_messages(notifier: &Notifier, receiver: &UnixDatagram) {
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        notifier.ready();
        assert_eq!(receive(receiver), "READY=1");
        notifier.watchdog_ping();
        assert_eq!(receive(receiver), "WATCHDOG=1");
        notifier.status("12/12 cameras online, outbox 0");
        assert_eq!(receive(receiver), "STATUS=12/12 cameras online, outbox 0");
        notifier.status("two\nlines\rREADY=1");
        assert_eq!(receive(receiver), "STATUS=two lines READY=1");
        notifier.stopping();
        assert_eq!(receive(receiver), "STOPPING=1");

        let before = monotonic_usec();
        notifier.reloading();
        let message = receive(receiver);
        let after = monotonic_usec();
        let lines: Vec<&str> = message.split('\n').collect();
        assert_eq!(lines.len(), 2, "{message:?}");
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1].strip_prefix("MONOTONIC_USEC=").expect(&message).parse().unwrap();
        assert!((before..=after).contains(&usec), "{usec} not within {before}..={after}");
    }

    #[test]
    fn sends_exact_datagrams_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_socket(path.to_str().unwrap()).unwrap();
        assert_eq!(notifier.watchdog_interval(), None);
        assert_messages(&notifier, &receiver);
    }

    #[test]
    fn sends_exact_datagrams_to_an_abstract_socket() {
        let name = format!("street-gateway-notify-test-{}", std::process::id());
        let receiver = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let notifier = Notifier::to_socket(&format!("@{name}")).unwrap();
        assert_messages(&notifier, &receiver);
    }

    #[test]
    fn a_missing_socket_is_logged_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::to_socket(dir.path().join("nobody-listens").to_str().unwrap()).unwrap();
        notifier.ready();
        notifier.watchdog_ping();
        notifier.stopping();
        assert!(notifier.warned.load(Ordering::Relaxed), "the failure was noticed (and logged once)");
    }

    #[test]
    fn unsupported_addresses_are_refused() {
        for address in ["", "relative/path", "vsock:2:1234"] {
            let error = Notifier::to_socket(address).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{address:?}");
        }
    }

    #[test]
    fn watchdog_interval_parsing() {
        let our_pid = 4242;
        let table: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            // (WATCHDOG_USEC, WATCHDOG_PID, interval)
            (None, None, None),
            (None, Some("4242"), None),
            (Some(""), None, None),
            (Some("sixty"), None, None),
            (Some("-60000000"), None, None),
            (Some("60s"), None, None),
            (Some("0"), None, None),
            (Some("60000000"), None, Some(Duration::from_secs(60))),
            (Some("1500"), None, Some(Duration::from_micros(1500))),
            (Some("60000000"), Some("4242"), Some(Duration::from_secs(60))),
            (Some("60000000"), Some("4243"), None),
            (Some("60000000"), Some("1"), None),
            (Some("60000000"), Some("not-a-pid"), None),
            (Some("60000000"), Some(""), None),
        ];
        for &(usec, pid, expected) in table {
            assert_eq!(
                watchdog_interval_from(usec, pid, our_pid),
                expected,
                "WATCHDOG_USEC={usec:?} WATCHDOG_PID={pid:?}"
            );
        }
    }

    #[test]
    fn pings_at_half_the_watchdog_interval() {
        assert_eq!(ping_period(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(ping_period(Duration::from_micros(1501)), Duration::from_nanos(750_500));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let first = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let second = monotonic_usec();
        assert!(first > 0 && second > first, "{first} then {second}");
    }
}
