//! Time: the batch [`Time`] type and the [`Clock`] that drives batch generation.
//!
//! The scheduler never reads the wall clock directly: it asks a [`Clock`]. Production uses
//! [`SystemClock`]; tests use [`ManualClock`] and advance it by hand, so no test ever
//! sleeps to wait for a batch.
//!
//! A clock has two readings: [`now`](Clock::now), the wall clock that batch times come
//! from (as in Spark), and [`mono`](Clock::mono), a monotonic clock that waits are
//! measured on. The wall clock may be stepped (by an administrator or NTP); the
//! scheduler waits on the monotonic one, so a step neither stalls nor floods it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time in milliseconds since the Unix epoch (or since the start of a
/// [`ManualClock`]). Batch times are always multiples of the batch interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

impl Time {
    /// Milliseconds of this time.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `ms` milliseconds.
    pub fn plus_ms(self, ms: i64) -> Time {
        Time(self.0 + ms)
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Time) -> i64 {
        self.0 - earlier.0
    }
}

impl fmt::Display for Time {
    /// Spark's format: `1000 ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// A UTC calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1..=31.
    pub day: u32,
    /// Hour, minute, second.
    pub hms: (u32, u32, u32),
    /// Day of the week, 0 = Sunday.
    pub weekday: u32,
}

/// The UTC calendar time of `epoch_secs` (Howard Hinnant's `civil_from_days`).
pub fn civil_time(epoch_secs: i64) -> CivilTime {
    let days = epoch_secs.div_euclid(86_400);
    let secs = epoch_secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    CivilTime {
        year: yoe + era * 400 + i64::from(month <= 2),
        month: small(month),
        day: small(day),
        hms: (small(secs / 3600), small(secs / 60 % 60), small(secs % 60)),
        // 1970-01-01 was a Thursday.
        weekday: small((days + 4).rem_euclid(7)),
    }
}

/// Epoch seconds of a UTC calendar time (Howard Hinnant's `days_from_civil`), or `None`
/// when a field is out of range (month 1..=12, day 1..=days of that month, hour < 24,
/// minute < 60, second < 61).
pub fn epoch_seconds(year: i64, month: u32, day: u32, hms: (u32, u32, u32)) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    let (h, m, s) = hms;
    if day == 0 || day > days_in_month || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}

/// Converts a duration to whole milliseconds (saturating).
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A source of time that the scheduler can wait on.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Time;

    /// Blocks until `now() >= target` or `cancel` is set (and [`Clock::interrupt`]
    /// called), then returns the current time.
    fn wait_until(&self, target: Time, cancel: &AtomicBool) -> Time;

    /// Wakes every thread blocked in [`Clock::wait_until`] so it re-checks its `cancel`
    /// flag. Set the flag first.
    fn interrupt(&self);

    /// A monotonic reading in milliseconds (its origin is the clock's own): it never
    /// goes back and does not move when the wall clock is stepped. By default the same
    /// as [`now`](Clock::now) (right for clocks that are not the wall's).
    fn mono(&self) -> Time {
        self.now()
    }

    /// Blocks until `mono() >= target` or `cancel` is set (and
    /// [`interrupt`](Clock::interrupt) called), then returns `mono()`. By default
    /// [`wait_until`](Clock::wait_until).
    fn wait_until_mono(&self, target: Time, cancel: &AtomicBool) -> Time {
        self.wait_until(target, cancel)
    }
}

use crate::sync::lock;

/// The wall clock, with the system's monotonic clock for waits.
pub struct SystemClock {
    lock: Mutex<()>,
    wake: Condvar,
    /// The origin of [`mono`](Clock::mono).
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            lock: Mutex::new(()),
            wake: Condvar::new(),
            origin: Instant::now(),
        }
    }
}

impl SystemClock {
    /// A new system clock.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Time {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_ms)
            .unwrap_or(0);
        Time(ms)
    }

    fn wait_until(&self, target: Time, cancel: &AtomicBool) -> Time {
        self.wait_for(|| self.now(), target, cancel)
    }

    fn interrupt(&self) {
        let _g = lock(&self.lock);
        self.wake.notify_all();
    }

    fn mono(&self) -> Time {
        Time(duration_ms(self.origin.elapsed()))
    }

    fn wait_until_mono(&self, target: Time, cancel: &AtomicBool) -> Time {
        self.wait_for(|| self.mono(), target, cancel)
    }
}

impl SystemClock {
    /// Blocks until `read() >= target` or `cancel` is set (and the clock interrupted);
    /// returns `read()`. The condition variable's timeout runs on the monotonic clock.
    fn wait_for(&self, read: impl Fn() -> Time, target: Time, cancel: &AtomicBool) -> Time {
        let mut guard = lock(&self.lock);
        loop {
            let now = read();
            if now >= target || cancel.load(Ordering::Acquire) {
                return now;
            }
            let wait = Duration::from_millis(u64::try_from(target.since(now)).unwrap_or(0));
            guard = self
                .wake
                .wait_timeout(guard, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A clock that only moves when told to: for deterministic tests.
#[derive(Default)]
pub struct ManualClock {
    now_ms: Mutex<i64>,
    changed: Condvar,
}

impl ManualClock {
    /// A manual clock at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self {
            now_ms: Mutex::new(start_ms),
            changed: Condvar::new(),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        *lock(&self.now_ms) += duration_ms(d);
        self.changed.notify_all();
    }

    /// Sets the clock to `t` (may not go backwards).
    pub fn set(&self, t: Time) {
        let mut now = lock(&self.now_ms);
        *now = (*now).max(t.0);
        self.changed.notify_all();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time(*lock(&self.now_ms))
    }

    fn wait_until(&self, target: Time, cancel: &AtomicBool) -> Time {
        let mut now = lock(&self.now_ms);
        while *now < target.0 && !cancel.load(Ordering::Acquire) {
            now = self.changed.wait(now).unwrap_or_else(|p| p.into_inner());
        }
        Time(*now)
    }

    fn interrupt(&self) {
        let _g = lock(&self.now_ms);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_inverts_civil_time() {
        for t in [
            0i64,
            1_450_396_800,
            951_782_400,
            4_102_444_799,
            -86_400,
            1_700_000_123,
        ] {
            let c = civil_time(t);
            assert_eq!(epoch_seconds(c.year, c.month, c.day, c.hms), Some(t), "{t}");
        }
        assert_eq!(epoch_seconds(2015, 2, 29, (0, 0, 0)), None);
        assert_eq!(epoch_seconds(2016, 2, 29, (0, 0, 0)), Some(1_456_704_000));
        assert_eq!(epoch_seconds(2015, 13, 1, (0, 0, 0)), None);
        assert_eq!(epoch_seconds(2015, 12, 18, (24, 0, 0)), None);
    }
    use std::sync::Arc;

    #[test]
    fn civil_time_of_known_dates() {
        let c = civil_time(1_450_396_800); // Fri Dec 18 2015
        assert_eq!(
            (c.year, c.month, c.day, c.hms, c.weekday),
            (2015, 12, 18, (0, 0, 0), 5)
        );
        let c = civil_time(951_782_400 + 86_399); // Tue Feb 29 2000 23:59:59
        assert_eq!(
            (c.year, c.month, c.day, c.hms, c.weekday),
            (2000, 2, 29, (23, 59, 59), 2)
        );
    }

    #[test]
    fn time_displays_like_spark() {
        assert_eq!(Time(1000).to_string(), "1000 ms");
    }

    #[test]
    fn manual_clock_wakes_waiter_on_advance() {
        let clock = Arc::new(ManualClock::new(0));
        let c2 = clock.clone();
        let waiter = std::thread::spawn(move || c2.wait_until(Time(1000), &AtomicBool::new(false)));
        clock.advance(Duration::from_millis(400));
        clock.advance(Duration::from_millis(600));
        assert_eq!(waiter.join().ok(), Some(Time(1000)));
    }

    #[test]
    fn manual_clock_cancel_releases_waiter() {
        let clock = Arc::new(ManualClock::new(0));
        let cancel = Arc::new(AtomicBool::new(false));
        let (c2, cancel2) = (clock.clone(), cancel.clone());
        let waiter = std::thread::spawn(move || c2.wait_until(Time(1_000_000), &cancel2));
        cancel.store(true, Ordering::Release);
        clock.interrupt();
        assert_eq!(waiter.join().ok(), Some(Time(0)));
    }

    #[test]
    fn system_clock_returns_once_target_passed() {
        let clock = SystemClock::new();
        let now = clock.now();
        assert!(clock.wait_until(now.plus_ms(-1), &AtomicBool::new(false)) >= now);
    }
}

/// Parses a duration as every flag and SQL literal of Lockgate takes it: a positive
/// number (decimals allowed) and a unit, with or without a space between: `500ms`,
/// `10s`, `1.5 s`, `2m`, `30 seconds`, `1 minute`, `2h`, `10d`, `1 week`. Units: `ms`
/// (`milli`, `millis`, `millisecond(s)`), `s` (`sec(s)`, `second(s)`), `m` (`min(s)`,
/// `minute(s)`), `h` (`hour(s)`), `d` (`day(s)`), `w` (`week(s)`); case does not matter.
/// The error says what is wrong and gives an example.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("`{text}` does not start with a number; write e.g. `10s`, `500ms` or `2 minutes`")
    })?;
    let unit = unit.trim().to_ascii_lowercase();
    let secs = match unit.as_str() {
        "" => return Err(format!("`{text}` has no unit; write e.g. `10s` or `500ms`")),
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86_400.0,
        "w" | "week" | "weeks" => n * 604_800.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use ms, s, m, h, d or w (or milliseconds, \
                 seconds, minutes, hours, days, weeks)"
            ))
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    /// One grammar for every flag: what `--window` took and what `--watermark` took.
    #[test]
    fn parses_every_flags_durations_and_rejects_nonsense() {
        for (text, want) in [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("10d", Duration::from_secs(864_000)),
            ("10 days", Duration::from_secs(864_000)),
            ("1 week", Duration::from_secs(604_800)),
            ("30 Seconds", Duration::from_secs(30)),
            ("1.5 s", Duration::from_millis(1500)),
            (" 500 ms ", Duration::from_millis(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for (text, says) in [
            ("10", "has no unit"),
            ("s", "does not start with a number"),
            ("0s", "not a positive duration"),
            ("3 fortnights", "unknown unit `fortnights`"),
            ("-1s", "does not start with a number"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
