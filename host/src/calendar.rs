//! UTC dates and times to and from the milliseconds every table stores: what a person types in a history
//! filter ("2026-12-02", "2026-12-02 10:30") and what the console shows. Proleptic Gregorian, no time zones
//! and no leap seconds, as Unix time itself; the day arithmetic is Howard Hinnant's `days_from_civil`.

const MS_PER_DAY: i64 = 86_400_000;

/// Which end of a range a date stands for: "2026-12-02" as `from` is its first millisecond, as `to` its last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Start,
    Finish,
}

/// Milliseconds since the epoch of `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (a `T` may stand
/// for the space, as an HTML `datetime-local` input sends it), read as UTC; `None` when it is not one of those
/// or names no real day or time. The parts left out are filled towards `end`.
pub fn utc_ms(text: &str, end: End) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut day = date.split('-');
    let (year, month, mday) = (number(day.next()?, 4)?, number(day.next()?, 2)?, number(day.next()?, 2)?);
    if day.next().is_some() || !(1..=12).contains(&month) || mday < 1 || mday > days_in_month(year, month) {
        return None;
    }
    let (ms_in_day, fill) = match time {
        None => (0, MS_PER_DAY - 1),
        Some(time) => {
            let mut parts = time.split(':');
            let (hour, minute) = (number(parts.next()?, 2)?, number(parts.next()?, 2)?);
            let (second, fill) = match parts.next() {
                Some(second) => (number(second, 2)?, 999),
                None => (0, 59_999),
            };
            if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
                return None;
            }
            ((hour * 3600 + minute * 60 + second) * 1000, fill)
        }
    };
    let start = days_from_civil(year, month, mday) * MS_PER_DAY + ms_in_day;
    Some(match end {
        End::Start => start,
        End::Finish => start + fill,
    })
}

/// `2026-12-02 10:30:05 UTC`.
pub fn utc_text(ms: i64) -> String {
    let (days, ms_in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    let seconds = ms_in_day / 1000;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// `2026-12-02`: the UTC day of an instant.
pub fn utc_day(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    format!("{year:04}-{month:02}-{day:02}")
}

/// The first millisecond of the UTC day of an instant.
pub fn day_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(MS_PER_DAY)
}

/// Exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // `date -u -d '2026-12-02 10:30:05' +%s` → 1796207405
        assert_eq!(utc_ms("2026-12-02 10:30:05", End::Start), Some(1_796_207_405_000));
        assert_eq!(utc_ms("2026-12-02T10:30:05", End::Start), Some(1_796_207_405_000));
        assert_eq!(utc_ms("1970-01-01", End::Start), Some(0));
        assert_eq!(utc_ms("1970-01-01", End::Finish), Some(MS_PER_DAY - 1));
        assert_eq!(utc_ms("2026-12-02 10:30", End::Finish), Some(1_796_207_400_000 + 59_999));
        assert_eq!(utc_ms("2024-02-29", End::Start), Some(1_709_164_800_000));
        assert_eq!(utc_text(1_796_207_405_123), "2026-12-02 10:30:05 UTC");
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(utc_day(1_796_207_405_123), "2026-12-02");
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(day_start(1_796_207_405_123), utc_ms("2026-12-02", End::Start).unwrap_or_default());
    }

    #[test]
    fn text_and_ms_agree_every_day_for_four_centuries() {
        for day in -73_000..73_000i64 {
            let ms = day * MS_PER_DAY + 45_296_000; // 12:34:56
            let text = utc_text(ms);
            assert_eq!(utc_ms(text.trim_end_matches(" UTC"), End::Start), Some(ms), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_date_is_refused() {
        for bad in [
            "",
            "2026",
            "2026-12",
            "2026-13-01",
            "2026-02-29",
            "2026-04-31",
            "2026-12-00",
            "26-12-02",
            "2026-12-02 24:00",
            "2026-12-02 10:60",
            "2026-12-02 10:30:61",
            "2026-12-02 10",
            "2026-12-02 10:30:05:00",
            "2026-1-02",
            "2026-12-02x",
            "+026-12-02",
            "1796207405000",
            "2026-12-02 1a:30",
        ] {
            assert_eq!(utc_ms(bad, End::Start), None, "{bad:?}");
        }
    }
}
