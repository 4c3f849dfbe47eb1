//! Time as an injected dependency, so tests can control it (style guide habit 8).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch. The one time representation stored by Tether.
pub type UnixMillis = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_millis(&self) -> UnixMillis;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the single place where Tether reads the wall clock"
    )]
    fn now_millis(&self) -> UnixMillis {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to. For tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: UnixMillis) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }

    /// Move the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats a timestamp as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: UnixMillis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Parses an RFC 3339 timestamp, or a relative duration such as `15m`, `24h`, `7d` before `now`.
pub fn parse_time(input: &str, now: UnixMillis) -> Option<UnixMillis> {
    if let Some(d) = parse_duration_millis(input) {
        return Some(now.saturating_sub(d));
    }
    let t =
        time::OffsetDateTime::parse(input, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Parses `30s`, `15m`, `24h`, `7d` into milliseconds.
pub fn parse_duration_millis(input: &str) -> Option<i64> {
    let unit = input.chars().last()?;
    let digits = input.get(..input.len().checked_sub(1)?)?;
    let n: i64 = digits.parse().ok()?;
    let factor = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor).filter(|v| *v >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_millis(), 1_000);
        c.advance(500);
        assert_eq!(c.now_millis(), 1_500);
    }

    #[test]
    fn rfc3339_round_trips() {
        let ms = 1_700_000_000_123;
        let s = rfc3339(ms);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_time(&s, 0), Some(ms));
    }

    #[test]
    fn relative_durations() {
        assert_eq!(parse_duration_millis("15m"), Some(900_000));
        assert_eq!(parse_time("1h", 10_000_000), Some(10_000_000 - 3_600_000));
        assert_eq!(parse_duration_millis("x"), None);
        assert_eq!(parse_duration_millis(""), None);
        assert_eq!(parse_duration_millis("-5m"), None);
    }
}
