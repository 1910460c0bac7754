//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`, with ONNX
//! Runtime's own chatter at `warn`). `GATEWAY_LOG_FORMAT=json` switches to JSON lines for log
//! shippers. And [`LogLimiter`], the rate limit for lines an outside party can make us repeat
//! (a camera failing in a loop): logged once per interval with a suppressed-count, never per
//! occurrence.

use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("GATEWAY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Rate limit for one source's repeating log line (a camera failing in a loop): the first
/// occurrence of a kind is logged at once; the same kind again at most once per `interval`,
/// saying how many were held back since the last line; a different kind at once, but no more
/// than `max_lines` lines per `interval` in all. Pure: the caller passes the time in.
///
/// So a camera that fails every 100 ms writes at most `max_lines` lines a minute (at 60 s and
/// 10, at most 10), whatever its errors say; what was held back is counted by the caller
/// (`gateway_camera_log_lines_suppressed_total`).
#[derive(Debug, Clone)]
pub struct LogLimiter<K> {
    interval: Duration,
    max_lines: u32,
    last: Option<(K, Instant)>,
    window_start: Option<Instant>,
    lines_in_window: u32,
    suppressed: u64,
}

/// What to do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write the line, with the count of occurrences held back since the previous line.
    Log {
        /// Occurrences not logged since the previous line.
        suppressed: u64,
    },
    /// Hold it back (count it).
    Suppress,
}

impl<K: PartialEq> LogLimiter<K> {
    /// At most `max_lines` lines per `interval`, and the same kind at most once per `interval`.
    pub fn new(interval: Duration, max_lines: u32) -> Self {
        LogLimiter {
            interval,
            max_lines: max_lines.max(1),
            last: None,
            window_start: None,
            lines_in_window: 0,
            suppressed: 0,
        }
    }

    /// Decides about one occurrence of `kind` at `now`.
    pub fn check(&mut self, now: Instant, kind: K) -> LogVerdict {
        if self.window_start.is_none_or(|start| now.saturating_duration_since(start) >= self.interval) {
            self.window_start = Some(now);
            self.lines_in_window = 0;
        }
        let repeat_too_soon = self
            .last
            .as_ref()
            .is_some_and(|(last, at)| *last == kind && now.saturating_duration_since(*at) < self.interval);
        if repeat_too_soon || self.lines_in_window >= self.max_lines {
            self.suppressed += 1;
            return LogVerdict::Suppress;
        }
        self.lines_in_window += 1;
        self.last = Some((kind, now));
        LogVerdict::Log { suppressed: std::mem::take(&mut self.suppressed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_error_is_logged_once_then_once_per_interval_with_the_suppressed_count() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(60), 10);
        let at = |ms: u64| start + Duration::from_millis(ms);
        // (time ms, kind, verdict)
        let table = [
            (0, "connect", LogVerdict::Log { suppressed: 0 }),
            (100, "connect", LogVerdict::Suppress),
            (59_999, "connect", LogVerdict::Suppress),
            (60_000, "connect", LogVerdict::Log { suppressed: 2 }),
            (60_100, "timeout", LogVerdict::Log { suppressed: 0 }),
            (60_200, "timeout", LogVerdict::Suppress),
            (60_300, "connect", LogVerdict::Log { suppressed: 1 }),
        ];
        for (ms, kind, verdict) in table {
            assert_eq!(limiter.check(at(ms), kind), verdict, "at {ms} ms, {kind}");
        }
    }

    #[test]
    fn a_tight_loop_of_changing_errors_writes_a_bounded_number_of_lines_per_interval() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(60), 10);
        let mut lines_per_minute = [0u32; 5];
        let mut suppressed_total = 0u64;
        // A failure every 10 ms for five minutes, alternating between two kinds.
        for step in 0..30_000u64 {
            let now = start + Duration::from_millis(step * 10);
            let kind = if step % 2 == 0 { "connect" } else { "protocol" };
            match limiter.check(now, kind) {
                LogVerdict::Log { suppressed } => {
                    lines_per_minute[(step / 6000) as usize] += 1;
                    suppressed_total += suppressed;
                }
                LogVerdict::Suppress => {}
            }
        }
        assert!(lines_per_minute.iter().all(|lines| *lines <= 10), "{lines_per_minute:?}");
        // Every occurrence is a line or counted in a later line's `suppressed`.
        let later = start + Duration::from_secs(400);
        let LogVerdict::Log { suppressed } = limiter.check(later, "connect") else { panic!("not logged") };
        let lines: u64 = lines_per_minute.iter().map(|l| u64::from(*l)).sum();
        assert_eq!(lines + suppressed_total + suppressed, 30_000);
    }
}
