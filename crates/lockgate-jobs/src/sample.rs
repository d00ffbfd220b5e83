//! Deterministic Apache-error-log style sample data (`lockgate generate logs`, the demo,
//! the benchmarks and the crash tests).
//!
//! Lines look like
//! `[Fri Dec 18 00:00:00 2015] [ERROR] [client 10.1.2.3] Directory index forbidden by rule: /home/raj/`.
//! About 10% are at level `ERROR`, and the string `ERROR` appears nowhere else. Clients
//! come from a pool of 5,000 addresses, so a word count holds about 100k distinct words. Event
//! time starts at 2015-12-18 00:00:00 UTC and rises by 100 ms per line. The same seed
//! gives the same bytes.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// 2015-12-18T00:00:00Z in epoch seconds.
pub const BASE_EPOCH_SECS: i64 = 1_450_396_800;
/// Event-time step between consecutive lines, in milliseconds.
pub const STEP_MS: i64 = 100;

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Writes `epoch_secs` as `Fri Dec 18 00:00:00 2015` (UTC).
pub fn format_apache_time(out: &mut String, epoch_secs: i64) {
    let c = lockgate_core::civil_time(epoch_secs);
    let (h, m, s) = c.hms;
    let _ = write!(
        out,
        "{} {} {:02} {h:02}:{m:02}:{s:02} {}",
        DAYS[c.weekday as usize % 7],
        MONTHS[(c.month as usize + 11) % 12],
        c.day,
        c.year
    );
}

const USERS: [&str; 6] = ["raj", "mia", "ola", "chen", "sam", "ines"];
const PATHS: [&str; 6] = [
    "index.html",
    "favicon.ico",
    "images/logo.png",
    "wp-login.php",
    "api/v1/items",
    "robots.txt",
];

fn message(rng: &mut Rng, out: &mut String) {
    let _ = match rng.below(6) {
        0 => write!(
            out,
            "Directory index forbidden by rule: /home/{}/",
            rng.pick(&USERS)
        ),
        1 => write!(
            out,
            "File does not exist: /var/www/html/{}",
            rng.pick(&PATHS)
        ),
        2 => write!(
            out,
            "client denied by server configuration: /srv/{}",
            rng.pick(&PATHS)
        ),
        3 => write!(
            out,
            "script not found or unable to stat: /usr/lib/cgi-bin/{}",
            rng.pick(&USERS)
        ),
        4 => write!(
            out,
            "user {}: authentication failure for \"/admin\": Password Mismatch",
            rng.pick(&USERS)
        ),
        _ => write!(
            out,
            "Invalid URI in request GET /{} HTTP/1.1",
            rng.pick(&PATHS)
        ),
    };
}

/// Distinct client addresses in the sample logs.
pub const CLIENTS: u64 = 5_000;

/// Appends line number `i` of the sample log to `out` (with its newline).
pub fn write_line(rng: &mut Rng, i: u64, out: &mut String) {
    out.push('[');
    let event_ms = BASE_EPOCH_SECS * 1000 + i as i64 * STEP_MS;
    format_apache_time(out, event_ms.div_euclid(1000));
    let level = match rng.below(100) {
        0..=9 => "ERROR",
        10..=29 => "WARN",
        30..=39 => "DEBUG",
        40..=59 => "NOTICE",
        _ => "INFO",
    };
    // A server sees a limited set of clients: CLIENTS addresses.
    let client = rng.below(CLIENTS);
    let _ = write!(
        out,
        "] [{level}] [client 10.0.{}.{}] ",
        client / 250,
        client % 250 + 1
    );
    message(rng, out);
    out.push('\n');
}

/// Writes `lines` lines over `files` files named `logs-NNNNN.log` in `dir`, each written
/// to a hidden temporary name and renamed into place. Returns the file paths in order.
pub fn generate_logs(dir: &Path, lines: u64, files: u64, seed: u64) -> Result<Vec<PathBuf>> {
    if files == 0 {
        return Err(Error::Config("--files must be at least 1".into()));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("creating output directory", dir, e))?;
    let mut rng = Rng::new(seed);
    let mut paths = Vec::new();
    let mut buf = String::new();
    for f in 0..files {
        let (from, to) = (lines * f / files, lines * (f + 1) / files);
        buf.clear();
        for i in from..to {
            write_line(&mut rng, i, &mut buf);
        }
        let name = format!("logs-{f:05}.log");
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(&name);
        let mut file = fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        file.write_all(buf.as_bytes())
            .map_err(|e| Error::io("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("renaming into place", &path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_time_format() {
        let mut s = String::new();
        format_apache_time(&mut s, BASE_EPOCH_SECS);
        assert_eq!(s, "Fri Dec 18 00:00:00 2015");
        s.clear();
        format_apache_time(&mut s, 951_782_400 + 86_399); // 2000-02-29 23:59:59
        assert_eq!(s, "Tue Feb 29 23:59:59 2000");
    }

    #[test]
    fn lines_are_deterministic_and_error_only_in_level() {
        let gen = |seed| {
            let mut rng = Rng::new(seed);
            let mut s = String::new();
            for i in 0..2000 {
                write_line(&mut rng, i, &mut s);
            }
            s
        };
        let a = gen(7);
        assert_eq!(a, gen(7));
        assert_ne!(a, gen(8));
        let errors = a.lines().filter(|l| l.contains("ERROR")).count();
        assert!((150..250).contains(&errors), "{errors}");
        assert!(a
            .lines()
            .filter(|l| l.contains("ERROR"))
            .all(|l| l.contains("] [ERROR] [")));
        assert!(a.starts_with("[Fri Dec 18 00:00:00 2015] ["));
    }
}
