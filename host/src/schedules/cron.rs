//! Cron expressions in an IANA time zone: parsing with clear errors, and the next fire times of a schedule.
//!
//! The pattern matching is croner's; this module adds the field checks that give a named message, the
//! nicknames croner lacks (`@midnight`), the time zone, and the daylight-saving rules below.
//!
//! # Expressions
//!
//! Five fields (`minute hour day-of-month month weekday`), or six with a leading seconds field. Month and
//! weekday names (`JAN`, `mon`, any case) are accepted in their own field only; croner's extras `L`, `W`, `#`,
//! `?` and a leading `+` on the weekday field (day-of-month AND weekday instead of cron's OR) work too. The
//! nicknames are `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly`. A seventh
//! (year) field is refused: croner would take it, but it makes a schedule that silently stops firing, and it
//! would make "six fields" ambiguous. So is an expression that can never fire (`0 0 30 2 *`).
//!
//! # Daylight saving and other clock changes
//!
//! A schedule fires at each real instant whose local wall-clock time in its zone matches the expression, with
//! one exception. In full:
//!
//! - A wall-clock time that does not exist (the hour skipped when clocks spring forward) does not fire that
//!   day. croner instead moves a single fixed time such as `30 2 * * *` to the first instant after the gap;
//!   we drop that instant.
//! - A wall-clock time that happens twice (clocks fall back) fires at both instants when the hour field is `*`
//!   or `*/n`: such a schedule runs by the clock's minutes or seconds, and the two are distinct real
//!   instants an hour apart. With any other hour field (`2`, `2,14`, `1-3`) the hours are wall-clock
//!   appointments and fire only on the first pass. croner does that for a single fixed time only (`30 2 * * *`);
//!   we skip the second pass for the rest (`0 2,14 * * *`, `*/30 2 * * *`).
//!
//! Each call computes from the wall clock at the given instant, never by adding an interval to a previous
//! slot, so a clock that jumps (NTP) or a long pause only moves where the search starts.

use chrono::{DateTime, LocalResult, NaiveDate, TimeDelta, TimeZone};
use chrono_tz::Tz;
use croner::errors::CronError as CronerError;
use croner::parser::{CronParser, Seconds, Year};

/// Longest expression accepted; the longest sensible one is well under 100 bytes.
const MAX_EXPRESSION_LEN: usize = 256;
/// Longest IANA zone name is about 30 bytes (America/Argentina/ComodRivadavia).
const MAX_TIME_ZONE_LEN: usize = 64;
/// Passes of the search in `next_after`: each dropped candidate (a time moved past a gap, a second pass of a
/// repeated hour) costs one, and at most a few can come in a row.
const MAX_SEARCH_PASSES: usize = 8;
const TIME_ZONE_HINT: &str = "use an IANA name such as Europe/Paris or UTC";

/// A validated schedule: a cron expression and an IANA time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    /// The expression as given, trimmed (shown back to the user).
    expression: String,
    time_zone: Tz,
    has_seconds: bool,
    /// The hour field is `*` or `*/n`: a repeated wall-clock hour fires on both passes (see the module doc).
    hour_is_wildcard: bool,
    schedule: croner::Cron,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CronError {
    /// What is wrong with the expression, naming it.
    #[error("{0}")]
    Expression(String),
    /// The time zone is empty or unknown.
    #[error("{0}")]
    TimeZone(String),
}

impl Cron {
    /// Validates `expression` (trimmed) and `time_zone` (an IANA name, e.g. `Europe/Paris`, or `UTC`).
    pub fn parse(expression: &str, time_zone: &str) -> Result<Cron, CronError> {
        let time_zone = parse_time_zone(time_zone)?;
        let expression = expression.trim();
        if expression.is_empty() {
            return Err(CronError::Expression("cron expression is empty".to_string()));
        }
        if expression.len() > MAX_EXPRESSION_LEN {
            return Err(CronError::Expression(format!(
                "cron expression is {} bytes long; at most {MAX_EXPRESSION_LEN} are allowed",
                expression.len()
            )));
        }
        let bad = |what: String| CronError::Expression(format!("cron `{expression}`: {what}"));

        let pattern = expand_nickname(expression).map_err(bad)?;
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        let specs: &[FieldSpec] = match fields.len() {
            5 => &FIELDS[1..],
            6 => &FIELDS,
            7 => return Err(bad("7 fields, but a year field is not supported (use 5, or 6 with seconds)".into())),
            n => {
                return Err(bad(format!(
                    "expected 5 fields (minute hour day-of-month month weekday) or 6 with a leading seconds \
                     field, found {n}"
                )))
            }
        };
        for (field, spec) in fields.iter().zip(specs) {
            check_field(field, spec).map_err(bad)?;
        }

        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let schedule = parser.parse(&pattern).map_err(|error| bad(locate_croner_error(&parser, &fields, error)))?;

        // A pattern without a year repeats every 400 years (a whole number of weeks), so one that croner finds no
        // match for within its search limit never fires. Refusing it here beats a job that silently never runs.
        let reference = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|day| day.and_hms_opt(0, 0, 0));
        if let Some(reference) = reference {
            if let Err(CronerError::TimeSearchLimitExceeded) = schedule.find_next_occurrence(&reference, false) {
                return Err(bad("never fires: no date matches its day-of-month, month and weekday fields".into()));
            }
        }

        Ok(Cron {
            expression: expression.to_string(),
            time_zone,
            has_seconds: fields.len() == 6,
            hour_is_wildcard: fields[fields.len() - 4].starts_with('*'),
            schedule,
        })
    }

    /// The first fire time strictly after `after_ms` (Unix milliseconds, UTC), as Unix ms; None if never.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut after = DateTime::from_timestamp_millis(after_ms)?.with_timezone(&self.time_zone);
        for _ in 0..MAX_SEARCH_PASSES {
            // An error here is croner's search limit (year 5000) or an instant chrono cannot hold: never.
            let candidate = self.schedule.find_next_occurrence(&after, false).ok()?;
            if candidate.timestamp_millis() <= after_ms || !self.schedule.is_time_matching(&candidate).ok()? {
                // croner moved a time that falls in a spring-forward gap to just after it: we skip it instead.
                after = candidate;
            } else if let (false, Some(span)) = (self.hour_is_wildcard, self.second_pass_span(&candidate)) {
                // A fixed hour on the second pass of a repeated hour: search again from the end of the repeat.
                after = self.last_second_of_repeat(candidate, span)?;
            } else {
                return Some(candidate.timestamp_millis());
            }
        }
        None
    }

    /// The next `n` fire times strictly after `after_ms`.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut times = Vec::with_capacity(n.min(64));
        let mut after = after_ms;
        while times.len() < n {
            let Some(next) = self.next_after(after) else { break };
            times.push(next);
            after = next;
        }
        times
    }

    /// The expression as given, trimmed.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The canonical IANA name of the time zone.
    pub fn time_zone(&self) -> &str {
        self.time_zone.name()
    }

    /// Whether the expression has a seconds field (6 fields) — the scheduler uses it only for display.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// If `instant` is the second pass through a repeated wall-clock time, the length of the repeat in seconds.
    fn second_pass_span(&self, instant: &DateTime<Tz>) -> Option<i64> {
        match self.time_zone.from_local_datetime(&instant.naive_local()) {
            LocalResult::Ambiguous(first, second) if *instant == second => {
                Some(second.signed_duration_since(first).num_seconds())
            }
            _ => None,
        }
    }

    /// The last whole second of the second pass that `instant` lies in. The pass ends less than `span` seconds
    /// after `instant`, so bisect on the offset (a dozen time zone look-ups, only on a fall-back day).
    fn last_second_of_repeat(&self, instant: DateTime<Tz>, span: i64) -> Option<DateTime<Tz>> {
        let at = |offset: i64| instant.checked_add_signed(TimeDelta::try_seconds(offset)?);
        let (mut inside, mut outside) = (0, span.max(1));
        while outside - inside > 1 {
            let middle = inside + (outside - inside) / 2;
            if self.second_pass_span(&at(middle)?).is_some() {
                inside = middle;
            } else {
                outside = middle;
            }
        }
        at(inside)
    }
}

fn parse_time_zone(name: &str) -> Result<Tz, CronError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CronError::TimeZone(format!("time zone is empty ({TIME_ZONE_HINT})")));
    }
    if name.len() > MAX_TIME_ZONE_LEN {
        return Err(CronError::TimeZone(format!(
            "unknown time zone: the name is longer than {MAX_TIME_ZONE_LEN} bytes ({TIME_ZONE_HINT})"
        )));
    }
    name.parse::<Tz>().map_err(|_| CronError::TimeZone(format!("unknown time zone `{name}` ({TIME_ZONE_HINT})")))
}

/// Replaces a `@nickname` by its five fields; croner knows all but `@midnight`, and says little about a typo.
fn expand_nickname(expression: &str) -> Result<String, String> {
    if !expression.starts_with('@') {
        return Ok(expression.to_string());
    }
    let fields = match expression.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            return Err("unknown nickname (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
                .to_string())
        }
    };
    Ok(fields.to_string())
}

/// What a field accepts, for the checks croner words vaguely ("Number out of bounds.") or does not make.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Words allowed in the field, upper case.
    words: &'static [&'static str],
}

const FIELDS: [FieldSpec; 6] = [
    FieldSpec { name: "second", min: 0, max: 59, words: &[] },
    FieldSpec { name: "minute", min: 0, max: 59, words: &[] },
    FieldSpec { name: "hour", min: 0, max: 23, words: &[] },
    FieldSpec { name: "day-of-month", min: 1, max: 31, words: &["L", "W", "LW"] },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        words: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    },
    // 0 and 7 are both Sunday.
    FieldSpec { name: "weekday", min: 0, max: 7, words: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "L"] },
];

/// Checks words, values and steps of one field. croner replaces names anywhere in the expression (`MAR` in the
/// weekday field would become Wednesday) and lets an empty list item (`1,,2`) through, so those are checked here.
fn check_field(field: &str, spec: &FieldSpec) -> Result<(), String> {
    let name = spec.name;
    for word in field.split(|c: char| !c.is_ascii_alphabetic()).filter(|word| !word.is_empty()) {
        if !spec.words.iter().any(|allowed| allowed.eq_ignore_ascii_case(word)) {
            return Err(format!("`{word}` is not allowed in the {name} field"));
        }
    }
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("empty list item in the {name} field `{field}`"));
        }
        // `#n` (nth weekday) is croner's to check; the step after `/` has its own range.
        let item = item.split('#').next().unwrap_or_default();
        let (values, step) = match item.split_once('/') {
            Some((values, step)) => (values, Some(step)),
            None => (item, None),
        };
        for digits in values.split(|c: char| !c.is_ascii_digit()).filter(|digits| !digits.is_empty()) {
            match digits.parse::<u32>() {
                Ok(value) if (spec.min..=spec.max).contains(&value) => {}
                _ => return Err(format!("{name} {digits} is out of range {}-{}", spec.min, spec.max)),
            }
        }
        if let Some(step) = step.and_then(|step| step.parse::<u64>().ok()) {
            if step == 0 || step > u64::from(spec.max) {
                return Err(format!("{name} step {step} is out of range 1-{}", spec.max));
            }
        }
    }
    Ok(())
}

/// Words croner's error with the field it comes from: each field is parsed alone, the others set to `*`.
fn locate_croner_error(parser: &CronParser, fields: &[&str], error: CronerError) -> String {
    let first_offender = (0..fields.len()).find(|&index| {
        let alone: Vec<&str> = (0..fields.len()).map(|i| if i == index { fields[i] } else { "*" }).collect();
        parser.parse(&alone.join(" ")).is_err()
    });
    let specs = if fields.len() == 6 { &FIELDS[..] } else { &FIELDS[1..] };
    match first_offender.and_then(|index| Some((specs.get(index)?, fields[index]))) {
        Some((spec, field)) => format!("{} field `{field}`: {error}", spec.name),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const MINUTE_MS: i64 = 60_000;
    const HOUR_MS: i64 = 3_600_000;

    /// Unix ms of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().timestamp_millis()
    }

    fn cron(expression: &str, time_zone: &str) -> Cron {
        Cron::parse(expression, time_zone).unwrap()
    }

    fn expression_error(expression: &str) -> String {
        match Cron::parse(expression, "UTC") {
            Err(CronError::Expression(message)) => message,
            other => panic!("{expression:?}: expected an expression error, got {other:?}"),
        }
    }

    fn assert_strictly_increasing(times: &[i64]) {
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "not strictly increasing: {times:?}");
    }

    #[test]
    fn five_fields_fire_strictly_after() {
        let schedule = cron("  15 10 * * *  ", "UTC");
        assert_eq!(schedule.expression(), "15 10 * * *");
        assert!(!schedule.has_seconds());
        assert_eq!(schedule.next_after(utc(2026, 1, 1, 0, 0, 0)), Some(utc(2026, 1, 1, 10, 15, 0)));
        // Exactly on a slot: the next one, a day later; a millisecond before: that slot.
        assert_eq!(schedule.next_after(utc(2026, 1, 1, 10, 15, 0)), Some(utc(2026, 1, 2, 10, 15, 0)));
        assert_eq!(schedule.next_after(utc(2026, 1, 1, 10, 15, 0) - 1), Some(utc(2026, 1, 1, 10, 15, 0)));
        assert_eq!(schedule.next_after(utc(2026, 1, 1, 10, 15, 0) + 999), Some(utc(2026, 1, 2, 10, 15, 0)));
    }

    #[test]
    fn six_fields_have_seconds() {
        let schedule = cron("*/2 * * * * *", "UTC");
        assert!(schedule.has_seconds());
        let start = utc(2026, 5, 1, 12, 0, 0) + 500;
        let times = schedule.upcoming(start, 5);
        assert_eq!(times.len(), 5);
        assert_eq!(times[0], utc(2026, 5, 1, 12, 0, 2));
        assert!(times.windows(2).all(|pair| pair[1] - pair[0] == 2_000), "{times:?}");

        let schedule = cron("30 0 9 * * *", "UTC");
        assert_eq!(schedule.next_after(utc(2026, 5, 1, 0, 0, 0)), Some(utc(2026, 5, 1, 9, 0, 30)));
    }

    #[test]
    fn nicknames() {
        let start = utc(2026, 5, 6, 10, 20, 0); // a Wednesday
        assert_eq!(cron("@hourly", "UTC").next_after(start), Some(utc(2026, 5, 6, 11, 0, 0)));
        assert_eq!(cron("@daily", "UTC").next_after(start), Some(utc(2026, 5, 7, 0, 0, 0)));
        assert_eq!(cron("@DAILY", "UTC").next_after(start), Some(utc(2026, 5, 7, 0, 0, 0)));
        assert_eq!(cron("@midnight", "UTC").next_after(start), Some(utc(2026, 5, 7, 0, 0, 0)));
        assert_eq!(cron("@weekly", "UTC").next_after(start), Some(utc(2026, 5, 10, 0, 0, 0)));
        assert_eq!(cron("@monthly", "UTC").next_after(start), Some(utc(2026, 6, 1, 0, 0, 0)));
        assert_eq!(cron("@yearly", "UTC").next_after(start), Some(utc(2027, 1, 1, 0, 0, 0)));
        assert_eq!(cron("@annually", "UTC").next_after(start), Some(utc(2027, 1, 1, 0, 0, 0)));
        assert!(!cron("@hourly", "UTC").has_seconds());
        assert!(expression_error("@reboot").contains("unknown nickname"));
    }

    #[test]
    fn month_and_weekday_names() {
        // 2026-03-27 is a Friday; after March the next weekday in JAN-MAR is Friday 2027-01-01.
        let expected = vec![
            utc(2026, 3, 27, 9, 0, 0),
            utc(2026, 3, 30, 9, 0, 0),
            utc(2026, 3, 31, 9, 0, 0),
            utc(2027, 1, 1, 9, 0, 0),
        ];
        for expression in ["0 9 * JAN-MAR MON-FRI", "0 9 * jan-mar mon-fri", "0 9 * 1-3 1-5"] {
            assert_eq!(cron(expression, "UTC").upcoming(utc(2026, 3, 27, 0, 0, 0), 4), expected, "{expression}");
        }
        // 7 is Sunday as well as 0.
        assert_eq!(cron("0 0 * * 7", "UTC").next_after(utc(2026, 5, 6, 0, 0, 0)), Some(utc(2026, 5, 10, 0, 0, 0)));
        // croner would read a month name in the weekday field as a weekday number, and the reverse.
        assert_eq!(expression_error("0 0 * * MAR"), "cron `0 0 * * MAR`: `MAR` is not allowed in the weekday field");
        assert_eq!(expression_error("0 0 * MON *"), "cron `0 0 * MON *`: `MON` is not allowed in the month field");
        assert_eq!(
            expression_error("0 0 * * MONDAY"),
            "cron `0 0 * * MONDAY`: `MONDAY` is not allowed in the weekday field"
        );
    }

    #[test]
    fn bad_expressions() {
        assert_eq!(expression_error("61 * * * *"), "cron `61 * * * *`: minute 61 is out of range 0-59");
        assert_eq!(expression_error("0 24 * * *"), "cron `0 24 * * *`: hour 24 is out of range 0-23");
        assert_eq!(expression_error("0 0 0 * *"), "cron `0 0 0 * *`: day-of-month 0 is out of range 1-31");
        assert_eq!(expression_error("0 0 * 1-13 *"), "cron `0 0 * 1-13 *`: month 13 is out of range 1-12");
        assert_eq!(expression_error("60 0 0 * * *"), "cron `60 0 0 * * *`: second 60 is out of range 0-59");
        assert_eq!(
            expression_error("99999999999 * * * *"),
            "cron `99999999999 * * * *`: minute 99999999999 is out of range 0-59"
        );
        assert_eq!(expression_error("*/0 * * * *"), "cron `*/0 * * * *`: minute step 0 is out of range 1-59");
        assert_eq!(expression_error("*/61 * * * *"), "cron `*/61 * * * *`: minute step 61 is out of range 1-59");
        assert_eq!(
            expression_error("* * *"),
            "cron `* * *`: expected 5 fields (minute hour day-of-month month weekday) or 6 with a leading seconds \
             field, found 3"
        );
        assert!(expression_error("0 0 0 1 1 * 2030").contains("year field is not supported"));
        assert!(expression_error("* * * * * * * *").contains("found 8"));
        assert_eq!(expression_error(""), "cron expression is empty");
        assert_eq!(expression_error(" \t\n"), "cron expression is empty");
        assert!(expression_error(&"* ".repeat(200)).contains("at most 256"));
        assert_eq!(expression_error("x * * * *"), "cron `x * * * *`: `x` is not allowed in the minute field");
        assert!(expression_error("hello").contains("found 1"));
        assert_eq!(expression_error("1,,2 * * * *"), "cron `1,,2 * * * *`: empty list item in the minute field `1,,2`");
        assert!(expression_error("5-1 * * * *").starts_with("cron `5-1 * * * *`: minute field `5-1`: "));
        assert!(expression_error("0 0 * * 5#6").starts_with("cron `0 0 * * 5#6`: weekday field `5#6`: "));
        assert!(expression_error("0 0 * * *%").starts_with("cron `0 0 * * *%`: weekday field `*%`: "));
        assert_eq!(
            expression_error("0 0 30 2 *"),
            "cron `0 0 30 2 *`: never fires: no date matches its day-of-month, month and weekday fields"
        );
    }

    #[test]
    fn time_zones() {
        let unknown = "unknown time zone `Mars/Base` (use an IANA name such as Europe/Paris or UTC)".to_string();
        assert_eq!(Cron::parse("* * * * *", "Mars/Base").unwrap_err(), CronError::TimeZone(unknown));
        assert!(matches!(Cron::parse("* * * * *", ""), Err(CronError::TimeZone(message)) if message.contains("empty")));
        assert!(matches!(Cron::parse("* * * * *", "  "), Err(CronError::TimeZone(_))));
        assert!(matches!(Cron::parse("* * * * *", &"A".repeat(100)), Err(CronError::TimeZone(_))));
        assert_eq!(cron("* * * * *", "UTC").time_zone(), "UTC");
        assert_eq!(cron("* * * * *", " Europe/Paris ").time_zone(), "Europe/Paris");
        // The time zone is checked first, then the expression.
        assert!(matches!(Cron::parse("", "Mars/Base"), Err(CronError::TimeZone(_))));
    }

    #[test]
    fn non_utc_offset() {
        // Asia/Shanghai is UTC+8 all year.
        let schedule = cron("0 9 * * *", "Asia/Shanghai");
        assert_eq!(schedule.time_zone(), "Asia/Shanghai");
        assert_eq!(schedule.next_after(utc(2026, 6, 1, 0, 0, 0)), Some(utc(2026, 6, 1, 1, 0, 0)));
        assert_eq!(schedule.next_after(utc(2026, 6, 1, 1, 0, 0)), Some(utc(2026, 6, 2, 1, 0, 0)));
        // 23:30 UTC is already 07:30 the next day there.
        assert_eq!(schedule.next_after(utc(2026, 12, 31, 23, 30, 0)), Some(utc(2027, 1, 1, 1, 0, 0)));
    }

    #[test]
    fn spring_forward_gap_is_skipped() {
        // Paris 2026-03-29 02:00 CET -> 03:00 CEST; New York 2026-03-08 02:00 EST -> 03:00 EDT.
        let paris = cron("30 2 * * *", "Europe/Paris");
        assert_eq!(
            paris.upcoming(utc(2026, 3, 27, 12, 0, 0), 3),
            vec![utc(2026, 3, 28, 1, 30, 0), utc(2026, 3, 30, 0, 30, 0), utc(2026, 3, 31, 0, 30, 0)]
        );
        let new_york = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            new_york.upcoming(utc(2026, 3, 6, 12, 0, 0), 3),
            vec![utc(2026, 3, 7, 7, 30, 0), utc(2026, 3, 9, 6, 30, 0), utc(2026, 3, 10, 6, 30, 0)]
        );
        // A time just after the gap is untouched, and interval schedules only lose the wall times that don't exist.
        assert_eq!(
            cron("0 3 * * *", "Europe/Paris").next_after(utc(2026, 3, 28, 12, 0, 0)),
            Some(utc(2026, 3, 29, 1, 0, 0))
        );
        assert_eq!(
            cron("30 * * * *", "Europe/Paris").upcoming(utc(2026, 3, 28, 23, 0, 0), 3),
            vec![utc(2026, 3, 28, 23, 30, 0), utc(2026, 3, 29, 0, 30, 0), utc(2026, 3, 29, 1, 30, 0)]
        );
        let every_second = cron("* * * * * *", "Europe/Paris").upcoming(utc(2026, 3, 29, 0, 59, 58), 3);
        assert_eq!(
            every_second,
            vec![utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 29, 1, 0, 1)]
        );
    }

    #[test]
    fn fall_back_repeat_fires_fixed_hours_once() {
        // Paris 2026-10-25 03:00 CEST -> 02:00 CET (02:00-02:59 happens at 00:xx and 01:xx UTC).
        let paris = cron("30 2 * * *", "Europe/Paris");
        assert_eq!(
            paris.upcoming(utc(2026, 10, 24, 12, 0, 0), 2),
            vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
        );
        // Asked from inside the second pass, it waits for the next day.
        assert_eq!(paris.next_after(utc(2026, 10, 25, 1, 5, 0)), Some(utc(2026, 10, 26, 1, 30, 0)));

        // New York 2026-11-01 02:00 EDT -> 01:00 EST (01:00-01:59 happens at 05:xx and 06:xx UTC).
        let new_york = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            new_york.upcoming(utc(2026, 10, 31, 12, 0, 0), 2),
            vec![utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 2, 6, 30, 0)]
        );

        // croner fires these on both passes; a fixed hour field means once.
        assert_eq!(
            cron("0 2,14 * * *", "Europe/Paris").upcoming(utc(2026, 10, 24, 12, 0, 0), 3),
            vec![utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 13, 0, 0), utc(2026, 10, 26, 1, 0, 0)]
        );
        let half_hours = cron("*/30 2 * * *", "Europe/Paris");
        assert_eq!(
            half_hours.upcoming(utc(2026, 10, 24, 12, 0, 0), 3),
            vec![utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 0, 0)]
        );
        assert_eq!(half_hours.next_after(utc(2026, 10, 25, 1, 5, 0)), Some(utc(2026, 10, 26, 1, 0, 0)));
        let every_second = cron("* * 1 * * *", "America/New_York");
        assert_eq!(every_second.next_after(utc(2026, 11, 1, 5, 59, 59)), Some(utc(2026, 11, 2, 6, 0, 0)));
    }

    #[test]
    fn fall_back_repeat_fires_every_real_instant_for_wildcard_hours() {
        // Every quarter hour of real time, through both passes of 02:00-02:59 in Paris.
        let times = cron("*/15 * * * *", "Europe/Paris").upcoming(utc(2026, 10, 24, 23, 50, 0), 12);
        assert_eq!(times[0], utc(2026, 10, 25, 0, 0, 0));
        assert!(times.windows(2).all(|pair| pair[1] - pair[0] == 15 * MINUTE_MS), "{times:?}");
        // The same across the spring-forward gap.
        let times = cron("*/15 * * * *", "Europe/Paris").upcoming(utc(2026, 3, 28, 23, 50, 0), 12);
        assert!(times.windows(2).all(|pair| pair[1] - pair[0] == 15 * MINUTE_MS), "{times:?}");
        // Hourly in New York: 01:00 EDT and 01:00 EST both fire.
        let times = cron("@hourly", "America/New_York").upcoming(utc(2026, 11, 1, 4, 30, 0), 4);
        assert_eq!(times[0], utc(2026, 11, 1, 5, 0, 0));
        assert!(times.windows(2).all(|pair| pair[1] - pair[0] == HOUR_MS), "{times:?}");
        // Asked from inside the second pass, it carries on within it.
        assert_eq!(
            cron("*/20 * * * *", "Europe/Paris").next_after(utc(2026, 10, 25, 1, 5, 0)),
            Some(utc(2026, 10, 25, 1, 20, 0))
        );
    }

    #[test]
    fn upcoming_is_strictly_increasing() {
        let start = utc(2026, 10, 24, 0, 0, 0);
        for (expression, zone) in [
            ("*/15 * * * *", "Europe/Paris"),
            ("30 2 * * *", "Europe/Paris"),
            ("*/7 * * * * *", "America/New_York"),
            ("0 9 * JAN-MAR MON-FRI", "Asia/Shanghai"),
            ("@weekly", "UTC"),
            ("0 0 L * *", "UTC"),
        ] {
            let times = cron(expression, zone).upcoming(start, 5);
            assert_eq!(times.len(), 5, "{expression}");
            assert!(times[0] > start, "{expression}");
            assert_strictly_increasing(&times);
        }
        assert!(cron("* * * * *", "UTC").upcoming(start, 0).is_empty());
    }

    #[test]
    fn out_of_range_instants_never_fire() {
        let schedule = cron("* * * * *", "UTC");
        assert_eq!(schedule.next_after(i64::MAX), None);
        assert!(schedule.upcoming(i64::MAX, 3).is_empty());
        // Before 1970 works too.
        assert_eq!(schedule.next_after(-1), Some(0));
    }
}
