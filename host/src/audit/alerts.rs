//! Alert rules on audited commands: a regular expression on the command, optionally for one host and one user
//! (`rm -rf /`, `curl .*\| *sh`). Every stored event is checked by the writer (so each is counted exactly once,
//! in `omserver_audit_alerts_total{rule}`), and the API's view of an event names the rules it matches, which the
//! live stream and the console show.

use std::sync::{Arc, RwLock};

use regex::{Regex, RegexBuilder};

use crate::store::{AlertRuleRow, AuditRow};

/// Longest pattern accepted, and the compiled size allowed: a rule runs on every event, so it must stay cheap.
pub const MAX_PATTERN: usize = 1000;
const COMPILED_LIMIT: usize = 1 << 20;

/// Why a rule was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("name: 1-64 of letters, digits, '.', '_' or '-'")]
    Name,
    #[error("pattern: {0}")]
    Pattern(String),
}

/// Checks a rule's name (it labels a metric) and compiles its pattern.
pub fn check(name: &str, pattern: &str) -> Result<Regex, RuleError> {
    let name_ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(RuleError::Name);
    }
    if pattern.is_empty() || pattern.len() > MAX_PATTERN {
        return Err(RuleError::Pattern(format!("1 to {MAX_PATTERN} bytes")));
    }
    RegexBuilder::new(pattern)
        .size_limit(COMPILED_LIMIT)
        .build()
        .map_err(|e| RuleError::Pattern(e.to_string().lines().last().unwrap_or("invalid").trim().to_owned()))
}

struct Compiled {
    name: String,
    regex: Regex,
    host_id: Option<i64>,
    user: Option<String>,
}

/// The rules in force, replaced whole when they change (readers never wait on a writer for long).
#[derive(Default)]
pub struct Alerts {
    rules: RwLock<Arc<Vec<Compiled>>>,
}

impl Alerts {
    /// Puts `rows` in force. A stored pattern that no longer compiles (a `regex` upgrade) is skipped and logged.
    pub fn set(&self, rows: &[AlertRuleRow]) {
        let compiled = rows
            .iter()
            .filter_map(|row| match check(&row.name, &row.pattern) {
                Ok(regex) => {
                    Some(Compiled { name: row.name.clone(), regex, host_id: row.host_id, user: row.user_name.clone() })
                }
                Err(err) => {
                    tracing::warn!(rule = %row.name, error = %err, "audit alert rule skipped");
                    None
                }
            })
            .collect();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(compiled);
    }

    fn current(&self) -> Arc<Vec<Compiled>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The names of the rules `row` matches.
    pub fn matching(&self, row: &AuditRow) -> Vec<String> {
        self.current().iter().filter(|rule| applies(rule, row)).map(|rule| rule.name.clone()).collect()
    }

    /// Counts every rule each stored row matches. Called once per committed row, by the writer.
    pub fn count(&self, rows: &[AuditRow]) {
        let rules = self.current();
        if rules.is_empty() {
            return;
        }
        for row in rows {
            for rule in rules.iter().filter(|rule| applies(rule, row)) {
                metrics::counter!("omserver_audit_alerts_total", "rule" => rule.name.clone()).increment(1);
            }
        }
    }
}

fn applies(rule: &Compiled, row: &AuditRow) -> bool {
    rule.host_id.is_none_or(|id| id == row.host_id)
        && rule.user.as_deref().is_none_or(|user| row.history_user == user || row.login_user.as_deref() == Some(user))
        && rule.regex.is_match(&row.history_command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host_id: i64, user: &str, command: &str) -> AuditRow {
        AuditRow {
            id: 1,
            host_id,
            history_ip: "10.0.0.1".into(),
            history_id: 1,
            history_user: user.into(),
            login_user: Some("alice".into()),
            tty: None,
            history_datetime: "2026-12-02 10:00:00".into(),
            received_at: 0,
            history_command: command.into(),
            source: "agent".into(),
            stream: None,
            seq: None,
            chain_seq: 1,
            row_hash: String::new(),
            session: None,
            argv: None,
            cwd: None,
            exe: None,
            exit_code: None,
            pid: None,
            ppid: None,
            euid: None,
            auid: None,
        }
    }

    fn rule(name: &str, pattern: &str, host_id: Option<i64>, user: Option<&str>) -> AlertRuleRow {
        AlertRuleRow {
            id: 1,
            name: name.into(),
            pattern: pattern.into(),
            host_id,
            host: None,
            user_name: user.map(str::to_owned),
            created_by: "admin".into(),
            created_at: 0,
        }
    }

    #[test]
    fn rules_match_by_command_host_and_user() {
        let alerts = Alerts::default();
        alerts.set(&[
            rule("rm-root", r"rm\s+-rf\s+/(\s|$)", None, None),
            rule("pipe-to-shell", r"curl .*\| *sh", Some(2), None),
            rule("alice-sudo", r"^sudo ", None, Some("alice")),
        ]);
        assert_eq!(alerts.matching(&row(1, "root", "rm -rf /")), ["rm-root"]);
        assert!(alerts.matching(&row(1, "root", "rm -rf /tmp/x")).is_empty());
        assert!(alerts.matching(&row(1, "root", "curl http://x | sh")).is_empty(), "host 1 is not the rule's");
        assert_eq!(alerts.matching(&row(2, "root", "curl http://x | sh")), ["pipe-to-shell"]);
        assert_eq!(alerts.matching(&row(3, "root", "sudo ls")), ["alice-sudo"], "alice is the login user");
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        assert!(matches!(check("ok", "(unclosed"), Err(RuleError::Pattern(_))));
        assert!(matches!(check("has space", "x"), Err(RuleError::Name)));
        assert!(matches!(check("big", &"a".repeat(MAX_PATTERN + 1)), Err(RuleError::Pattern(_))));
        assert!(matches!(check("huge", r"\w{1000}\w{1000}"), Err(RuleError::Pattern(_))), "compiled size bounded");
    }
}
