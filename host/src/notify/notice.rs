//! What a notification says happened: built from the stored fact when its event is expanded, stored with the
//! delivery (so a later change of the job or rule does not rewrite what was sent), rendered when it is sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{JobRow, ResultRow};

/// Most groups of hosts not ok listed in a job's message; the rest are counted.
const MAX_GROUPS: usize = 5;
/// Most host names listed in one group.
const MAX_GROUP_HOSTS: usize = 10;
/// Longest excerpt of a host's output or of a command kept in a notice.
const MAX_TEXT: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event")]
pub enum Notice {
    #[serde(rename = "job.finished")]
    JobFinished(JobNotice),
    /// A job waits for a second person's approval.
    #[serde(rename = "job.approval")]
    JobApproval(JobNotice),
    #[serde(rename = "schedule.fire")]
    ScheduleFire(FireNotice),
    #[serde(rename = "audit.alert")]
    AuditAlert(AlertNotice),
    #[serde(rename = "module.rejected")]
    ModuleRejected { file: String, reason: String },
    #[serde(rename = "backend.unhealthy")]
    BackendUnhealthy { backend: String, detail: String },
    #[serde(rename = "audit.verify")]
    AuditVerify { findings: usize, hosts: usize, first: String },
    /// "Send a test" from the API.
    #[serde(rename = "test")]
    Test { by: String },
}

impl Notice {
    pub fn event(&self) -> &'static str {
        match self {
            Notice::JobFinished(_) => "job.finished",
            Notice::JobApproval(_) => "job.approval",
            Notice::ScheduleFire(_) => "schedule.fire",
            Notice::AuditAlert(_) => "audit.alert",
            Notice::ModuleRejected { .. } => "module.rejected",
            Notice::BackendUnhealthy { .. } => "backend.unhealthy",
            Notice::AuditVerify { .. } => "audit.verify",
            Notice::Test { .. } => "test",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobNotice {
    pub job: i64,
    pub module: i64,
    /// The module's name when it is loaded.
    pub module_name: Option<String>,
    pub status: String,
    pub error: Option<String>,
    /// A user, a token, or `schedule:NAME`.
    pub by: String,
    pub template: Option<String>,
    pub hosts: usize,
    /// Hosts by status (`ok`, `failed`, `unreachable`, `lost`, `cancelled`, `skipped`).
    pub counts: BTreeMap<String, usize>,
    /// Hosts not ok, folded: one group per status and text.
    pub not_ok: Vec<HostGroup>,
    /// Groups left out of `not_ok`.
    pub more_groups: usize,
    /// App categories of its hosts (for filters).
    pub apps: Vec<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Hosts that ended alike.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostGroup {
    pub status: String,
    pub text: String,
    pub hosts: Vec<String>,
    /// Hosts of the group left out of `hosts`.
    pub more: usize,
}

impl JobNotice {
    pub fn new(job: &JobRow, results: &[ResultRow], module_name: Option<String>, template: Option<String>) -> Self {
        let mut counts = BTreeMap::new();
        let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
        for r in results {
            *counts.entry(r.status.clone()).or_insert(0) += 1;
            if r.status == "ok" {
                continue;
            }
            let text = fold_text(r);
            match groups.iter_mut().find(|(status, t, _)| *status == r.status && *t == text) {
                Some(group) => group.2.push(r.host.clone()),
                None => groups.push((r.status.clone(), text, vec![r.host.clone()])),
            }
        }
        // The largest groups first: they are what the reader acts on.
        groups.sort_by_key(|g| std::cmp::Reverse(g.2.len()));
        let more_groups = groups.len().saturating_sub(MAX_GROUPS);
        let not_ok = groups
            .into_iter()
            .take(MAX_GROUPS)
            .map(|(status, text, hosts)| HostGroup {
                status,
                text,
                more: hosts.len().saturating_sub(MAX_GROUP_HOSTS),
                hosts: hosts.into_iter().take(MAX_GROUP_HOSTS).collect(),
            })
            .collect();
        let hosts = serde_json::from_str::<Vec<String>>(&job.hosts).map(|h| h.len()).unwrap_or(results.len());
        JobNotice {
            job: job.id,
            module: job.module_id,
            module_name,
            status: job.status.clone(),
            error: job.error.clone(),
            by: job.created_by.clone(),
            template,
            hosts,
            counts,
            not_ok,
            more_groups,
            apps: Vec::new(),
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

/// A host's result as one line for grouping: its error, or the end of its output, with its own name replaced so
/// that "web1: refused" and "web2: refused" fold together.
fn fold_text(r: &ResultRow) -> String {
    let source = if r.stderr.trim().is_empty() { &r.stdout } else { &r.stderr };
    let line = source.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let line = if r.host.is_empty() { line.to_owned() } else { line.replace(&r.host, "<host>") };
    let line = if line.is_empty() { r.rc.map(|rc| format!("exit status {rc}")).unwrap_or_default() } else { line };
    clip(&line)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FireNotice {
    pub schedule_id: i64,
    pub schedule: String,
    /// The slot, Unix ms.
    pub slot: i64,
    pub outcome: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertNotice {
    pub rule: String,
    /// The first matching event of this notice.
    pub event_id: i64,
    pub host: String,
    pub host_id: i64,
    pub user: String,
    pub login_user: Option<String>,
    pub tty: Option<String>,
    pub command: String,
    pub datetime: String,
    /// The newest matching command counted into this notice, when there are more.
    pub last_command: Option<String>,
}

/// Cuts text to [`MAX_TEXT`] bytes on a character boundary.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(host: &str, status: &str, stderr: &str) -> ResultRow {
        ResultRow {
            host: host.into(),
            status: status.into(),
            rc: Some(1),
            stdout: String::new(),
            stderr: stderr.into(),
            duration_ms: 5,
        }
    }

    #[test]
    fn hosts_not_ok_fold_by_status_and_text_with_their_own_name_left_out() {
        let job = JobRow {
            id: 7,
            module_id: 1001,
            module_version: "1".into(),
            backend: "ssh".into(),
            params: "{}".into(),
            hosts: r#"["web1","web2","web3","db1"]"#.into(),
            status: "failed".into(),
            error: None,
            created_by: "alice".into(),
            created_at: 0,
            started_at: Some(1),
            finished_at: Some(2),
            rollout: None,
            rerun_of: None,
            template_id: None,
            definition: None,
        };
        let results = [
            result("web1", "failed", "web1: connection refused"),
            result("web2", "failed", "web2: connection refused"),
            result("web3", "ok", ""),
            result("db1", "unreachable", "timed out"),
        ];
        let notice = JobNotice::new(&job, &results, Some("restart".into()), None);
        assert_eq!(notice.counts["failed"], 2);
        assert_eq!(notice.counts["ok"], 1);
        assert_eq!(notice.not_ok.len(), 2);
        assert_eq!(notice.not_ok[0].hosts, ["web1", "web2"]);
        assert_eq!(notice.not_ok[0].text, "<host>: connection refused");
        assert_eq!(notice.hosts, 4);
    }

    #[test]
    fn clip_keeps_characters_whole() {
        let long = "é".repeat(400);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_TEXT + "…".len());
        assert!(clipped.ends_with('…'));
    }
}
