//! Labels: the names people give things (tokens, saved jobs, schedules, channels, alert rules). One rule for all,
//! stated the same way in the OpenAPI document (`maxLength` and the pattern [`PATTERN`] shows), so that a client
//! built from the document never sends a label the server refuses, nor the other way round.

/// The rule as the document's `pattern` says it: no control characters, and at least one character that is not
/// white space. Written into each schema attribute by hand (utoipa takes only literals); keep them the same.
pub const PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// The label in `raw`, its surrounding white space dropped, or `None` when it breaks the rule: more than `max`
/// characters (counted before trimming, as `maxLength` counts), a control character anywhere, or only white space.
pub fn check(raw: &str, max: usize) -> Option<&str> {
    let ok = raw.chars().count() <= max && !raw.chars().any(char::is_control) && !raw.trim().is_empty();
    ok.then(|| raw.trim())
}

/// The rule in words, for an error answer.
pub fn rule(max: usize) -> String {
    format!("must be 1 to {max} characters, without control characters, not only spaces")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_its_pattern() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        for raw in ["nightly", " padded ", "\u{3000}x", "tab\tinside", "line\n", "", "   ", "\u{3000}", "é", "\u{85}a"]
        {
            assert_eq!(check(raw, 128).is_some(), pattern.is_match(raw), "{raw:?}");
        }
        assert_eq!(check(" padded ", 128), Some("padded"));
        assert_eq!(check(&"é".repeat(128), 128).map(|l| l.chars().count()), Some(128));
        assert_eq!(check(&"é".repeat(129), 128), None);
    }
}
