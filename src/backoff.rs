//! Jittered, capped exponential backoff. Pure: the caller supplies the randomness, so tests
//! are exact.

use std::time::Duration;

/// Delay before retry number `attempt` (0-based): `min(max, initial · 2^attempt)`, with "equal
/// jitter" — half of it fixed, half scaled by `jitter` ∈ [0, 1) — so that 600 cameras that fail
/// together (a switch reboot) do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), attempt: 0 }
    }

    /// The delay before the next retry; advances the attempt count.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exponent = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        base / 2 + base.mul_f64(jitter / 2.0)
    }

    /// Failures since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the initial delay, after the peer proved healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_with_equal_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(1000), Duration::from_millis(5000));
        // (jitter, expected delay in ms)
        let table = [(0.0, 500), (0.0, 1000), (0.0, 2000), (0.0, 2500), (0.999_999, 5000), (0.5, 3750)];
        for (jitter, expected_ms) in table {
            let delay = backoff.next_delay(jitter).as_millis();
            assert!((delay as i64 - expected_ms).abs() <= 1, "jitter {jitter}: {delay} ms, expected {expected_ms}");
        }
        assert_eq!(backoff.attempt(), 6);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(500));
    }

    #[test]
    fn never_overflows_after_many_failures() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(backoff.next_delay(0.99) <= Duration::from_secs(60));
        }
    }
}
