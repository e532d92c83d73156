//! From a [`Notice`] to words people can act on, and from those words to each target's format. Text from hosts,
//! commands and modules is untrusted: it is kept apart from our own labels until the last step, where each
//! format escapes it its own way (Slack mrkdwn, HTML mail, a one-line mail subject), so that it stays text.

use std::fmt::Write as _;

use super::notice::{AlertNotice, FireNotice, JobNotice, Notice};

/// A notification in words. `title`, field values and blocks may hold untrusted text; labels are ours.
#[derive(Debug, Clone)]
pub struct Message {
    pub title: String,
    pub fields: Vec<(&'static str, String)>,
    /// Longer untrusted text (a command, grouped host errors), shown as code.
    pub blocks: Vec<(String, String)>,
    pub link: Option<String>,
}

/// Words for `notice`; `count` is how many matches a grouped alert covers, `base` the console's public URL.
pub fn compose(notice: &Notice, count: i64, base: &str) -> Message {
    let base = base.trim_end_matches('/');
    match notice {
        Notice::JobFinished(job) => job_message(job, base),
        Notice::JobApproval(job) => {
            let mut message = job_message(job, base);
            message.title =
                format!("Job {} waits for approval: {}", job.job, message.title.split_once(": ").map_or("", |t| t.1));
            message
        }
        Notice::ScheduleFire(fire) => fire_message(fire, base),
        Notice::AuditAlert(alert) => alert_message(alert, count, base),
        Notice::ModuleRejected { file, reason } => Message {
            title: format!("Module file rejected: {file}"),
            fields: vec![("File", file.clone())],
            blocks: vec![("Reason".into(), reason.clone())],
            link: Some(format!("{base}/modules")),
        },
        Notice::BackendUnhealthy { backend, detail } => Message {
            title: format!("Backend {backend} is unhealthy"),
            fields: vec![("Backend", backend.clone())],
            blocks: vec![("Problem".into(), detail.clone())],
            link: Some(format!("{base}/run")),
        },
        Notice::AuditVerify { findings, hosts, first } => Message {
            title: format!("Audit chain verification found {findings} problem{}", plural(*findings)),
            fields: vec![("Hosts checked", hosts.to_string()), ("Problems", findings.to_string())],
            blocks: vec![("First problem".into(), first.clone())],
            link: Some(format!("{base}/audit")),
        },
        Notice::Test { by } => Message {
            title: "Test notification from OMServer".into(),
            fields: vec![("Sent by", by.clone())],
            blocks: vec![],
            link: Some(base.to_owned()),
        },
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn job_message(job: &JobNotice, base: &str) -> Message {
    let module = match &job.module_name {
        Some(name) => format!("{name} ({})", job.module),
        None => format!("module {}", job.module),
    };
    let title = format!("Job {} {}: {module} on {} host{}", job.job, job.status, job.hosts, plural(job.hosts));
    let counts = job.counts.iter().map(|(status, n)| format!("{n} {status}")).collect::<Vec<_>>().join(", ");
    let mut fields = vec![("Status", job.status.clone()), ("Module", module), ("Started by", job.by.clone())];
    if let Some(template) = &job.template {
        fields.push(("Saved job", template.clone()));
    }
    fields.push(("Hosts", if counts.is_empty() { "none".into() } else { counts }));
    if let (Some(start), Some(end)) = (job.started_at, job.finished_at) {
        // Saturating: a notice is read back from its stored JSON, where any two numbers can meet.
        fields.push(("Duration", format!("{:.1} s", end.saturating_sub(start).max(0) as f64 / 1000.0)));
    }
    if let Some(error) = &job.error {
        fields.push(("Error", error.clone()));
    }
    let mut blocks: Vec<(String, String)> = job
        .not_ok
        .iter()
        .map(|group| {
            let mut hosts = group.hosts.join(", ");
            if group.more > 0 {
                let _ = write!(hosts, " and {} more", group.more);
            }
            let total = group.hosts.len().saturating_add(group.more);
            (format!("{} ({total}): {hosts}", group.status), group.text.clone())
        })
        .collect();
    if job.more_groups > 0 {
        blocks.push(("Other hosts not ok".into(), format!("{} more groups: see the job page", job.more_groups)));
    }
    Message { title, fields, blocks, link: Some(format!("{base}/jobs/{}", job.job)) }
}

fn fire_message(fire: &FireNotice, base: &str) -> Message {
    let slot = crate::calendar::utc_text(fire.slot);
    let mut fields = vec![("Schedule", fire.schedule.clone()), ("Slot", slot), ("Outcome", fire.outcome.clone())];
    if let Some(reason) = &fire.reason {
        fields.push(("Reason", reason.clone()));
    }
    Message {
        title: format!(
            "Schedule {} {} a run",
            fire.schedule,
            if fire.outcome == "missed" { "missed" } else { "failed" }
        ),
        fields,
        blocks: vec![],
        link: Some(format!("{base}/templates")),
    }
}

fn alert_message(alert: &AlertNotice, count: i64, base: &str) -> Message {
    let more = count.saturating_sub(1);
    let title = if more > 0 {
        format!("Audit alert {} on {}: and {more} more", alert.rule, alert.host)
    } else {
        format!("Audit alert {} on {}", alert.rule, alert.host)
    };
    let mut fields = vec![
        ("Rule", alert.rule.clone()),
        ("Host", alert.host.clone()),
        ("User", alert.user.clone()),
        ("Login user", alert.login_user.clone().unwrap_or_default()),
        ("TTY", alert.tty.clone().unwrap_or_default()),
        ("Time", alert.datetime.clone()),
        ("Matches", count.to_string()),
    ];
    fields.retain(|(_, value)| !value.is_empty());
    let mut blocks = vec![("Command".to_owned(), alert.command.clone())];
    if let Some(last) = &alert.last_command {
        blocks.push(("Latest match".to_owned(), last.clone()));
    }
    let query: String = reqwest::Url::parse_with_params("x:/", [("host", alert.host.as_str())])
        .ok()
        .and_then(|u| u.query().map(str::to_owned))
        .unwrap_or_default();
    Message { title, fields, blocks, link: Some(format!("{base}/audit?{query}")) }
}

/// One line, no control characters: a mail subject or a log line. A CR LF from a host never starts a header.
pub fn one_line(text: &str) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut out = String::with_capacity(line.len());
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > 200 {
        out = out.chars().take(199).collect::<String>() + "…";
    }
    out
}

/// Plain text: the webhook's `text` and the mail's text part.
pub fn plain(message: &Message) -> String {
    let mut out = format!("{}\n\n", one_line(&message.title));
    for (label, value) in &message.fields {
        let _ = writeln!(out, "{label}: {}", one_line(value));
    }
    for (label, text) in &message.blocks {
        let _ = write!(out, "\n{}:\n", one_line(label));
        for line in text.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(link) = &message.link {
        let _ = write!(out, "\n{link}\n");
    }
    out
}

/// Slack mrkdwn (also read by Mattermost and Rocket.Chat). `&`, `<` and `>` are escaped, so no `<!channel>`,
/// `<@U…>` or `<url|label>` can come from a host; `@` gets a zero-width joiner so Mattermost's plain `@here`
/// mentions nobody; code spans cannot be closed from inside.
pub fn slack(message: &Message) -> serde_json::Value {
    let mut text = format!("*{}*\n", slack_escape(&one_line(&message.title)));
    for (label, value) in &message.fields {
        let _ = writeln!(text, "*{label}:* {}", slack_escape(&one_line(value)));
    }
    for (label, block) in &message.blocks {
        let _ = write!(text, "*{}:*\n```{}```\n", slack_escape(&one_line(label)), slack_code(block));
    }
    if let Some(link) = &message.link {
        // Our own URL: its query is percent-encoded, so it holds no `|` or `>`.
        let _ = write!(text, "<{link}|Open in OMServer>");
    }
    serde_json::json!({ "text": text })
}

fn slack_escape(text: &str) -> String {
    slack_text(text, false)
}

fn slack_code(text: &str) -> String {
    let escaped = slack_text(text, true);
    if escaped.is_empty() {
        " ".into()
    } else {
        escaped
    }
}

/// Slack's entities escaped and mentions broken; outside code also the formatting marks, inside code only the
/// backtick (so the block cannot be closed from inside).
fn slack_text(text: &str, code: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' | '`' => {
                out.push(c);
                out.push('\u{2060}');
            }
            '*' | '_' | '~' if !code => {
                out.push(c);
                out.push('\u{2060}');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The mail's subject: one line (lettre encodes what is not ASCII).
pub fn subject(message: &Message) -> String {
    format!("[OMServer] {}", one_line(&message.title))
}

/// The mail's HTML part: every untrusted string escaped.
pub fn html(message: &Message) -> String {
    let mut out = String::from("<!doctype html><html><body style=\"font-family:sans-serif\">");
    let _ = write!(out, "<h2>{}</h2><table>", html_escape(&message.title));
    for (label, value) in &message.fields {
        let _ = write!(out, "<tr><th align=\"left\">{label}</th><td>{}</td></tr>", html_escape(value));
    }
    out.push_str("</table>");
    for (label, text) in &message.blocks {
        let _ = write!(out, "<h3>{}</h3><pre>{}</pre>", html_escape(label), html_escape(text));
    }
    if let Some(link) = &message.link {
        let _ = write!(out, "<p><a href=\"{0}\">{0}</a></p>", html_escape(link));
    }
    out.push_str("</body></html>");
    out
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(command: &str) -> Notice {
        Notice::AuditAlert(AlertNotice {
            rule: "pipe-to-shell".into(),
            event_id: 1,
            host: "web<1>".into(),
            host_id: 1,
            user: "root".into(),
            login_user: None,
            tty: Some("pts/0".into()),
            command: command.into(),
            datetime: "2026-12-03 10:00:00".into(),
            last_command: None,
        })
    }

    /// Found by the `notify_message` fuzz target: a stored notice's counts and times overflowed when added or
    /// subtracted (a panic in the deliverer, for every later delivery of the channel).
    #[test]
    fn extreme_numbers_in_a_stored_notice_render() {
        let job = r#"{"event":"job.finished","job":1,"module":1003,"module_name":null,"status":"failed","error":null,
            "by":"x","template":null,"hosts":1,"counts":{},"not_ok":[{"status":"failed","text":"t","hosts":["a"],
            "more":18446744073709551615}],"more_groups":0,"apps":[],"started_at":-9223372036854775808,
            "finished_at":9223372036854775807}"#;
        let message = compose(&serde_json::from_str(job).unwrap(), 1, "https://om.example");
        assert!(message.blocks[0].0.contains("(18446744073709551615)"), "{:?}", message.blocks);
        assert!(plain(&message).contains("Duration: 9223372036854776.0 s"), "{}", plain(&message));
        let message = compose(&alert("x"), i64::MIN, "https://om.example");
        assert_eq!(message.title, "Audit alert pipe-to-shell on web<1>");
    }

    const HOSTILE: &str = "curl x | sh <script>alert(1)</script> <!channel> @here ```\r\nSubject: owned";

    #[test]
    fn hostile_text_stays_text_in_every_format() {
        let message = compose(&alert(HOSTILE), 3, "https://om.example/");
        let slack = slack(&message)["text"].as_str().unwrap().to_owned();
        assert!(!slack.contains("<!channel>") && !slack.contains("<script>") && !slack.contains("@here"), "{slack}");
        assert_eq!(slack.matches("```").count(), 2, "one code block, not closed from inside: {slack}");
        let html = html(&message);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"), "{html}");
        let subject = subject(&message);
        assert!(!subject.contains('\r') && !subject.contains('\n'), "{subject}");
        assert!(subject.contains("and 2 more"), "{subject}");
        assert!(message.link.unwrap().ends_with("/audit?host=web%3C1%3E"));
    }
}
