//! The agent's own log file: "History not configured", rejected events, delivery failures, damaged spool lines.
//!
//! Per uid (default `<spool_dir>/<uid>.log`, mode 0600) because lines can quote commands. Writing it never fails
//! loudly: it is where the agent reports, not something to report about. It is kept under about 1 MiB by moving it
//! to `<file>.1` (one old generation).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::spool::files::{self, Access};

/// Size at which the log is rotated.
const ROTATE_AT: u64 = 1 << 20;

/// A log file.
#[derive(Debug, Clone)]
pub struct LocalLog {
    path: PathBuf,
}

impl LocalLog {
    /// A log at `path` (nothing is opened until the first line).
    pub fn new(path: PathBuf) -> LocalLog {
        LocalLog { path }
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line `<UTC time> pid=<pid> <message>` (newlines in `message` escaped). Best effort.
    pub fn write(&self, message: &str) {
        let Ok(Some(mut file)) = files::open_private(&self.path, Access::AppendCreate) else { return };
        if file.metadata().map(|m| m.len() >= ROTATE_AT).unwrap_or(false) {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            if std::fs::rename(&self.path, &old).is_ok() {
                match files::open_private(&self.path, Access::AppendCreate) {
                    Ok(Some(fresh)) => file = fresh,
                    _ => return,
                }
            }
        }
        let line = format!(
            "{} pid={} {}\n",
            utc_timestamp(crate::spool::now()),
            std::process::id(),
            message.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r")
        );
        let _ = file.write_all(line.as_bytes());
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (proleptic Gregorian, no time-zone database needed).
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_521_845), "2026-11-24T12:04:05Z");
    }

    #[test]
    fn lines_are_single_and_rotation_keeps_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::new(dir.path().join("0.log"));
        log.write("History not configured\nsecond line");
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("History not configured\\nsecond line"));
        std::fs::write(log.path(), vec![b'x'; ROTATE_AT as usize]).unwrap();
        log.write("after rotation");
        assert!(std::fs::read_to_string(log.path()).unwrap().contains("after rotation"));
        assert!(dir.path().join("0.log.1").exists());
    }
}
