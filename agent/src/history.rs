//! Parsing the argv that `PROMPT_COMMAND` hands the agent.
//!
//! With ``HISTTIMEFORMAT="`whoami` %F %T "`` bash's `history 1` prints
//! `printf("%5d%c %s%s\n", number, modified ? '*' : ' ', timestamp, line)`, for example
//! `"  173  root 2014-06-07 22:05:56 ls  -l"`. The agent gets that either as ONE argument (`"$(history 1)"`, as the
//! profile snippet writes it) or split into words (unquoted, as the original did: inner spacing is lost and the
//! shell has already expanded globs; nothing can bring those back).
//!
//! **Invariant:** in the one-argument form the command is kept byte for byte: everything after the time field,
//! minus exactly one separating space.

use crate::error::{Error, Result};

/// One parsed history line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// bash's history number.
    pub history_id: u64,
    /// The user name HISTTIMEFORMAT captured (`whoami` when the profile was sourced).
    pub user: String,
    /// `YYYY-MM-DD HH:MM:SS`, host-local time, as bash printed it.
    pub time: String,
    /// The command as typed (multi-line commands keep their newlines).
    pub command: String,
}

/// Parses the agent's argv (program name excluded), in either form.
///
/// Several words are joined with single spaces, which is exactly what the unquoted form lost; one argument is
/// parsed as is.
pub fn parse_args(args: &[String]) -> Result<HistoryLine> {
    match args {
        [one] => parse_line(one),
        many => parse_line(&many.join(" ")),
    }
}

/// Parses one `history 1` line.
///
/// Fewer than five words, a history number that is not a number, or a date/time not shaped `YYYY-MM-DD HH:MM:SS`
/// give [`Error::HistoryNotConfigured`]: then HISTTIMEFORMAT is not what the profile snippet sets.
pub fn parse_line(line: &str) -> Result<HistoryLine> {
    let words = line.split_whitespace().count();
    if words < 5 {
        return Err(Error::HistoryNotConfigured(format!("{words} word(s) in the history line, expected at least 5")));
    }
    let rest = line.trim_start();
    let (number, rest) = take_word(rest);
    let (user, rest) = take_word(rest.trim_start());
    let (date, rest) = take_word(rest.trim_start());
    let (time, rest) = take_word(rest.trim_start());

    // `history` marks an entry edited after recall with `*` right after the number.
    let number = number.strip_suffix('*').unwrap_or(number);
    let history_id = number
        .parse::<u64>()
        .map_err(|_| Error::HistoryNotConfigured(format!("history number {number:?} is not a number")))?;
    if !is_date(date) || !is_time(time) {
        return Err(Error::HistoryNotConfigured(format!(
            "expected `<user> YYYY-MM-DD HH:MM:SS` after the number, got {user:?} {date:?} {time:?}"
        )));
    }
    // `rest` starts with the separator bash printed (the trailing space of HISTTIMEFORMAT); drop exactly one
    // whitespace character so leading spaces the user typed survive.
    let mut chars = rest.chars();
    chars.next();
    let command = chars.as_str();
    Ok(HistoryLine { history_id, user: user.to_owned(), time: format!("{date} {time}"), command: command.to_owned() })
}

/// Splits off the first whitespace-free word; `s` must not start with whitespace.
fn take_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(end) => s.split_at(end),
        None => (s, ""),
    }
}

fn is_date(s: &str) -> bool {
    shaped(s, b"dddd-dd-dd")
}

fn is_time(s: &str) -> bool {
    shaped(s, b"dd:dd:dd")
}

/// `pattern`: `d` is an ASCII digit, any other byte must match itself.
fn shaped(s: &str, pattern: &[u8]) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern).all(|(b, &p)| if p == b'd' { b.is_ascii_digit() } else { b == p })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn line(id: u64, user: &str, time: &str, command: &str) -> HistoryLine {
        HistoryLine { history_id: id, user: user.into(), time: time.into(), command: command.into() }
    }

    #[test]
    fn quoted_form_with_padded_number() {
        let got = parse_args(&args(&["  173  root 2014-06-07 22:05:56 ls -l"])).unwrap();
        assert_eq!(got, line(173, "root", "2014-06-07 22:05:56", "ls -l"));
    }

    #[test]
    fn unquoted_form() {
        let got = parse_args(&args(&["173", "root", "2014-06-07", "22:05:56", "ls", "-l"])).unwrap();
        assert_eq!(got, line(173, "root", "2014-06-07 22:05:56", "ls -l"));
    }

    #[test]
    fn quoted_form_keeps_inner_spacing_quotes_and_globs() {
        let raw = "   42  alice 2026-11-24 09:00:01 echo  'a   b'  \"$HOME\"  *.log | grep -c x";
        let got = parse_line(raw).unwrap();
        assert_eq!(got.command, "echo  'a   b'  \"$HOME\"  *.log | grep -c x");
        assert_eq!(got.history_id, 42);
        assert_eq!(got.user, "alice");
    }

    #[test]
    fn leading_space_typed_by_the_user_survives() {
        // HISTCONTROL= keeps space-prefixed commands; bash prints them with their leading space.
        let got = parse_line("    7  root 2026-11-24 09:00:01  secret-command").unwrap();
        assert_eq!(got.command, " secret-command");
    }

    #[test]
    fn edited_entry_marker() {
        let got = parse_line("  173* root 2014-06-07 22:05:56 ls").unwrap();
        assert_eq!(got.history_id, 173);
        assert_eq!(got.command, "ls");
    }

    #[test]
    fn utf8_and_multiline_commands() {
        let got = parse_line("  9  José 2026-11-24 10:11:12 echo 'héllo wörld ✓'\nprintf '日本'").unwrap();
        assert_eq!(got.user, "José");
        assert_eq!(got.command, "echo 'héllo wörld ✓'\nprintf '日本'");
    }

    #[test]
    fn large_numbers() {
        let got = parse_line("123456  root 2026-11-24 10:11:12 true").unwrap();
        assert_eq!(got.history_id, 123_456);
    }

    #[test]
    fn too_few_words() {
        for bad in [&[][..], &[""], &["  173  ls -l"], &["173", "root", "2014-06-07", "22:05:56"]] {
            let err = parse_args(&args(bad)).unwrap_err();
            assert!(matches!(err, Error::HistoryNotConfigured(_)), "{bad:?} gave {err:?}");
            assert!(err.to_string().starts_with("History not configured"));
        }
    }

    #[test]
    fn history_without_timeformat_is_refused() {
        // HISTTIMEFORMAT unset: "  173  echo a b c" has five words but no user/date/time.
        let err = parse_line("  173  echo a b c d").unwrap_err();
        assert!(matches!(err, Error::HistoryNotConfigured(_)));
        let err = parse_line("  x  root 2014-06-07 22:05:56 ls").unwrap_err();
        assert!(matches!(err, Error::HistoryNotConfigured(_)));
        let err = parse_line("  1  root 2014/06/07 22:05:56 ls").unwrap_err();
        assert!(matches!(err, Error::HistoryNotConfigured(_)));
        let err = parse_line("  1  root 2014-06-07 22:05 ls x").unwrap_err();
        assert!(matches!(err, Error::HistoryNotConfigured(_)));
    }
}
