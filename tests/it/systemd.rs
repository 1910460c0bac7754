//! The systemd unit (`systemd/street-gateway.service`): `systemd-analyze verify` finds nothing
//! to say about it, the commands it runs are ones the binary accepts, and the binary speaks
//! the `Type=notify` protocol (READY=1, watchdog pings, RELOADING=1 on SIGHUP, STOPPING=1) to a
//! socket the test binds, as systemd's would be, without systemd.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, project_root, shared_media};

/// The binary's path in the unit as installed.
const INSTALLED_BINARY: &str = "/usr/bin/gateway";
/// The config's path in the unit as installed.
const INSTALLED_CONFIG: &str = "/etc/street-gateway/gateway.toml";

/// A valid config such as a deployment would have (one camera, kept disabled so nothing
/// connects), with state in `state_dir`.
fn deployment_config(state_dir: &Path) -> String {
    support::config_text_in(
        state_dir,
        r#"
[cameras.gate-3]
url = "rtsp://192.0.2.13:554/Streaming/Channels/102"
street = "Lixia"
community = "Heping Road No. 3 compound"
grid = "lixia-heping-02"
steward = "steward-wang"
enabled = false
"#,
    )
}

/// The unit, with the installed binary and config paths replaced by the built binary and
/// `config`, written as `street-gateway.service` in `dir`.
fn unit_for_test(dir: &Path, config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(project_root().join("systemd/street-gateway.service")).unwrap();
    assert!(text.contains(INSTALLED_BINARY) && text.contains(INSTALLED_CONFIG), "the unit names the installed paths");
    let text = text
        .replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_gateway"))
        .replace(INSTALLED_CONFIG, config.to_str().expect("a UTF-8 temporary path"));
    let unit = dir.join("street-gateway.service");
    std::fs::write(&unit, text).unwrap();
    unit
}

/// Runs `systemd-analyze ARGS`; fails with what to install when it is missing.
fn systemd_analyze(args: &[&std::ffi::OsStr]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("systemd-analyze not found: install Debian's systemd package (run scripts/setup --for-tests)")
        }
        Err(error) => panic!("cannot run systemd-analyze: {error}"),
    }
}

/// The value of the unit's `key=` line, split into words (the unit quotes nothing).
fn command_line(unit: &Path, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap();
    let prefix = format!("{key}=");
    let line = text.lines().find_map(|line| line.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key}= line"));
    line.split_whitespace().map(str::to_string).collect()
}

/// Runs `systemd-analyze verify` on `unit` (with any drop-ins beside it) and fails on a
/// non-zero exit or any line about the unit or its drop-ins.
fn assert_verifies(unit: &Path) {
    let output = systemd_analyze(&["verify".as_ref(), unit.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // In a container systemd-analyze may also complain about the host's own units; only
    // lines about ours count (an unknown or misspelt key does not change the exit status).
    let about_ours: Vec<&str> = stderr.lines().filter(|line| line.contains("street-gateway.service")).collect();
    assert!(
        output.status.success() && about_ours.is_empty(),
        "systemd-analyze verify {}: {}\nabout the unit: {about_ours:#?}\nstderr:\n{stderr}",
        unit.display(),
        output.status
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, deployment_config(&dir.path().join("state"))).unwrap();
    let unit = unit_for_test(dir.path(), &config);
    assert_verifies(&unit);

    // With the zone editor's drop-in, installed as docs/operations.md says.
    let drop_ins = dir.path().join("street-gateway.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::copy(project_root().join("systemd/zone-editor.conf"), drop_ins.join("zone-editor.conf")).unwrap();
    assert_verifies(&unit);
}

#[test]
fn the_units_commands_are_ones_the_binary_accepts() {
    support::require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, deployment_config(&dir.path().join("state"))).unwrap();
    let unit = unit_for_test(dir.path(), &config);

    // ExecStartPre= exactly as written: the config check passes.
    let check = command_line(&unit, "ExecStartPre");
    // (Never systemd's socket, should the tests themselves run under a Type=notify unit.)
    let output = Command::new(&check[0]).args(&check[1..]).env_remove("NOTIFY_SOCKET").output().unwrap();
    assert!(output.status.success(), "{check:?}: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(": ok ("), "{output:?}");

    // ExecStart= as written, stopped after a second: starts and stops cleanly.
    let run = command_line(&unit, "ExecStart");
    assert_eq!(run[1..3], ["run", "--config"], "{run:?}");
    let output = Command::new(&run[0])
        .args(&run[1..])
        .args(["--run-for-secs", "1"])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.contains("gateway stopped"), "{run:?}: {}\n{stderr}", output.status);

    // ExecReload= signals the main process; the binary it names exists.
    let reload = command_line(&unit, "ExecReload");
    assert_eq!(reload[1..], ["-HUP", "$MAINPID"]);
    assert!(Path::new(&reload[0]).is_file(), "{} is missing", reload[0]);
}

/// Every assignment received on `socket` until `until` holds for the list or `limit` passes
/// (a liveness bound, not a speed assertion). One datagram may carry several assignments.
fn receive_until(socket: &UnixDatagram, limit: Duration, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline && !until(&received) {
        match socket.recv(&mut buffer) {
            Ok(length) => {
                let datagram = String::from_utf8_lossy(&buffer[..length]).into_owned();
                received.extend(datagram.split('\n').filter(|line| !line.is_empty()).map(str::to_string));
            }
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => panic!("receive on the notify socket: {error}"),
        }
    }
    received
}

#[test]
fn the_gateway_speaks_type_notify_ready_watchdog_reload_stopping() {
    support::require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let clip = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let config = dir.path().join("gateway.toml");
    let cameras = format!("[cameras.plaza]\nurl = \"file:{}\"\nanalysis_interval_ms = 500\n", clip.display());
    std::fs::write(&config, support::config_text_in(&dir.path().join("state"), &cameras)).unwrap();
    let notify_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify_path).unwrap();

    // As systemd would start it with Type=notify and WatchdogSec=2 (pings due every second).
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stop = |child: &mut std::process::Child| {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().unwrap()
    };

    let count = |received: &[String], what: &str| received.iter().filter(|line| *line == what).count();
    // READY=1, then the loop's watchdog pings (at least two: it keeps pinging while it works).
    let received = receive_until(&socket, Duration::from_secs(60), |received| {
        let ready = received.iter().position(|line| line == "READY=1");
        ready.is_some_and(|ready| count(&received[ready..], "WATCHDOG=1") >= 2)
    });
    let ready = received.iter().position(|line| line == "READY=1");
    if ready.is_none() || count(&received[ready.unwrap()..], "WATCHDOG=1") < 2 {
        let status = stop(&mut child);
        panic!("expected READY=1 then WATCHDOG=1 pings, got {received:?} (gateway: {status})");
    }
    assert_eq!(count(&received, "READY=1"), 1, "READY=1 once: {received:?}");
    assert!(!received[..ready.unwrap()].contains(&"WATCHDOG=1".to_string()), "no ping before READY=1: {received:?}");

    // SIGHUP (the unit's ExecReload=): RELOADING=1 with the monotonic clock, then READY=1 again
    // once the (unchanged) config was re-read.
    let _ = Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    let received = receive_until(&socket, Duration::from_secs(60), |received| {
        let reloading = received.iter().position(|line| line == "RELOADING=1");
        reloading.is_some_and(|reloading| count(&received[reloading..], "READY=1") > 0)
    });
    let Some(reloading) = received.iter().position(|line| line == "RELOADING=1") else {
        let status = stop(&mut child);
        panic!("expected RELOADING=1 after SIGHUP, got {received:?} (gateway: {status})");
    };
    assert!(
        received.get(reloading + 1).is_some_and(|line| line.starts_with("MONOTONIC_USEC=")),
        "MONOTONIC_USEC beside RELOADING=1: {received:?}"
    );
    assert!(received[reloading..].contains(&"READY=1".to_string()), "READY=1 after the reload: {received:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let received = receive_until(&socket, Duration::from_secs(30), |received| count(received, "STOPPING=1") > 0);
    let status = child.wait().unwrap();
    assert!(received.contains(&"STOPPING=1".to_string()), "expected STOPPING=1 after SIGTERM, got {received:?}");
    assert!(status.success(), "gateway exited {status}");
}
