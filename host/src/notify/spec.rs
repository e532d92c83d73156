//! What an admin asks for: channels (where to send) and subscriptions (which events, filtered), checked before
//! they are stored. Every refusal names the field.

use serde::{Deserialize, Serialize};

use super::NotifyError;

const MAX_NAME: usize = 128;
const MAX_URL: usize = 2_048;
const MAX_RECIPIENTS: usize = 50;

/// The events a subscription can name.
pub const EVENTS: &[&str] = &[
    "job.finished",
    "job.approval",
    "schedule.fire",
    "audit.alert",
    "module.rejected",
    "backend.unhealthy",
    "audit.verify",
];

/// Job statuses a `job.finished` filter can name.
const JOB_STATUSES: &[&str] = &["succeeded", "failed", "cancelled", "rejected", "expired"];
/// Fire outcomes a `schedule.fire` filter can name: the ones that are notified.
const FIRE_OUTCOMES: &[&str] = &["missed", "failed"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Slack,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
        }
    }

    pub fn parse(text: &str) -> Option<ChannelKind> {
        [ChannelKind::Webhook, ChannelKind::Slack, ChannelKind::Email].into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same machine or network.
    None,
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The mail server of an email channel.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    #[schema(maximum = 65535)]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Accepted at creation, kept with the channel's secret, never shown again.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
}

/// A channel as a request creates it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// 1 to 128 characters, no control characters, not only spaces (surrounding spaces are dropped).
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub name: String,
    pub kind: ChannelKind,
    /// Webhook and slack: where to POST (http or https).
    #[serde(default)]
    pub url: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Email: the sender.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub smtp: Option<Smtp>,
}

/// A channel's settings as stored (`notify_channels.config`): everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
}

impl ChannelSpec {
    /// Checks the channel and splits it into what is shown and what is secret (the SMTP password).
    pub fn check(self) -> Result<(String, ChannelKind, ChannelConfig, Option<String>), NotifyError> {
        let name = check_name(&self.name)?;
        let mut config = ChannelConfig { url: None, to: Vec::new(), from: None, smtp: None };
        let mut password = None;
        match self.kind {
            ChannelKind::Webhook | ChannelKind::Slack => {
                let url = self.url.ok_or_else(|| invalid("url", "required for a webhook or slack channel"))?;
                config.url = Some(check_url(&url)?);
                for (field, present) in [("to", !self.to.is_empty()), ("from", self.from.is_some())] {
                    if present {
                        return Err(invalid(field, "only for an email channel"));
                    }
                }
                if self.smtp.is_some() {
                    return Err(invalid("smtp", "only for an email channel"));
                }
            }
            ChannelKind::Email => {
                if self.url.is_some() {
                    return Err(invalid("url", "not for an email channel (it uses smtp)"));
                }
                if self.to.is_empty() || self.to.len() > MAX_RECIPIENTS {
                    return Err(invalid("to", format!("1 to {MAX_RECIPIENTS} addresses")));
                }
                for address in &self.to {
                    check_address("to", address)?;
                }
                let from = self.from.ok_or_else(|| invalid("from", "required for an email channel"))?;
                check_address("from", &from)?;
                let mut smtp = self.smtp.ok_or_else(|| invalid("smtp", "required for an email channel"))?;
                check_host(&smtp.host)?;
                if smtp.port == 0 {
                    return Err(invalid("smtp.port", "1-65535"));
                }
                if smtp.user.as_deref().is_some_and(|u| u.is_empty() || u.len() > 256 || u.contains(['\r', '\n'])) {
                    return Err(invalid("smtp.user", "1-256 characters on one line"));
                }
                password = smtp.password.take();
                if password.is_some() && smtp.user.is_none() {
                    return Err(invalid("smtp.password", "given without smtp.user"));
                }
                if password.is_some() && smtp.tls == SmtpTls::None {
                    return Err(invalid("smtp.tls", "a password is never sent without TLS: use starttls or tls"));
                }
                config.to = self.to;
                config.from = Some(from);
                config.smtp = Some(smtp);
            }
        }
        Ok((name, self.kind, config, password))
    }
}

fn check_name(name: &str) -> Result<String, NotifyError> {
    crate::labels::check(name, MAX_NAME)
        .map(str::to_owned)
        .ok_or_else(|| invalid("name", crate::labels::rule(MAX_NAME)))
}

/// An absolute http(s) URL with a host, no credentials in it (they would be logged by proxies and shown here).
fn check_url(text: &str) -> Result<String, NotifyError> {
    if text.len() > MAX_URL {
        return Err(invalid("url", format!("at most {MAX_URL} bytes")));
    }
    let url = reqwest::Url::parse(text).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url", format!("must be http or https, not {}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("url", "must not carry a user or password"));
    }
    Ok(url.to_string())
}

fn check_address(field: &str, text: &str) -> Result<(), NotifyError> {
    text.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| invalid(field, format!("{text:?} is not an email address: {e}")))
}

fn check_host(host: &str) -> Result<(), NotifyError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !ok {
        return Err(invalid("smtp.host", "a host name or IP address"));
    }
    Ok(())
}

/// What a subscription narrows its event to. Which fields apply depends on the event; others are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// job.finished: the statuses (`succeeded`, `failed`, `cancelled`); any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<String>,
    /// job.finished: the module's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<u32>,
    /// job.finished: a saved job, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// job.finished: an app category one of its hosts is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// schedule.fire: a schedule, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// schedule.fire: `missed` and/or `failed`; both when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcome: Vec<String>,
    /// audit.alert: an alert rule, by name; any rule when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// audit.alert: at most one message per rule per this many seconds; later matches are counted into the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// backend.unhealthy: a backend, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// The longest storm window: a day.
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// A subscription as a request creates it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The channel, by id.
    pub channel: i64,
    /// One of `job.finished`, `job.approval` (a job waits for approval), `schedule.fire`, `audit.alert`,
    /// `module.rejected`, `backend.unhealthy`, `audit.verify`.
    pub event: String,
    #[serde(default)]
    pub filter: Filter,
}

impl Filter {
    /// Refuses fields that do not apply to `event` and values out of range. Names (rule, template, schedule)
    /// are checked against what exists by the caller.
    pub fn check(&self, event: &str) -> Result<(), NotifyError> {
        let allowed: &[&str] = match event {
            "job.finished" => &["status", "module", "template", "app"],
            "job.approval" => &["module", "template", "app"],
            "schedule.fire" => &["schedule", "outcome"],
            "audit.alert" => &["rule", "window_secs"],
            "backend.unhealthy" => &["backend"],
            "module.rejected" | "audit.verify" => &[],
            other => return Err(invalid("event", format!("{other:?} is not one of {}", EVENTS.join(", ")))),
        };
        let present = [
            ("status", !self.status.is_empty()),
            ("module", self.module.is_some()),
            ("template", self.template.is_some()),
            ("app", self.app.is_some()),
            ("schedule", self.schedule.is_some()),
            ("outcome", !self.outcome.is_empty()),
            ("rule", self.rule.is_some()),
            ("window_secs", self.window_secs.is_some()),
            ("backend", self.backend.is_some()),
        ];
        if let Some((field, _)) = present.iter().find(|(field, set)| *set && !allowed.contains(field)) {
            return Err(invalid(&format!("filter.{field}"), format!("does not apply to {event}")));
        }
        if let Some(bad) = self.status.iter().find(|s| !JOB_STATUSES.contains(&s.as_str())) {
            return Err(invalid("filter.status", format!("{bad:?} is not one of {}", JOB_STATUSES.join(", "))));
        }
        if let Some(bad) = self.outcome.iter().find(|s| !FIRE_OUTCOMES.contains(&s.as_str())) {
            return Err(invalid("filter.outcome", format!("{bad:?} is not one of {}", FIRE_OUTCOMES.join(", "))));
        }
        if self.window_secs.is_some_and(|w| w == 0 || w > MAX_WINDOW_SECS) {
            return Err(invalid("filter.window_secs", format!("1 to {MAX_WINDOW_SECS}")));
        }
        Ok(())
    }
}

pub(super) fn invalid(field: &str, reason: impl Into<String>) -> NotifyError {
    NotifyError::Invalid { field: field.to_owned(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> ChannelSpec {
        ChannelSpec {
            name: "ops".into(),
            kind: ChannelKind::Webhook,
            url: Some(url.into()),
            to: vec![],
            from: None,
            smtp: None,
        }
    }

    fn field(err: NotifyError) -> String {
        match err {
            NotifyError::Invalid { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(webhook("https://hooks.example/x").check().is_ok());
        for bad in ["ftp://x/y", "file:///etc/passwd", "not a url", "https://user:pw@x/", "javascript:alert(1)"] {
            assert_eq!(field(webhook(bad).check().unwrap_err()), "url", "{bad}");
        }
    }

    #[test]
    fn email_needs_parsable_addresses_and_tls_for_a_password() {
        let spec = |to: &str, tls: SmtpTls, password: Option<&str>| ChannelSpec {
            name: "mail".into(),
            kind: ChannelKind::Email,
            url: None,
            to: vec![to.into()],
            from: Some("omserver@example.org".into()),
            smtp: Some(Smtp {
                host: "127.0.0.1".into(),
                port: 2525,
                tls,
                user: password.map(|_| "u".into()),
                password: password.map(str::to_owned),
            }),
        };
        let (_, _, config, secret) = spec("ops@example.org", SmtpTls::Starttls, Some("pw")).check().unwrap();
        assert_eq!(secret.as_deref(), Some("pw"));
        assert!(!serde_json::to_string(&config).unwrap().contains("pw"), "the password is not in the config");
        assert_eq!(field(spec("not an address", SmtpTls::None, None).check().unwrap_err()), "to");
        assert_eq!(field(spec("a@b.example\r\nBcc: x@y", SmtpTls::None, None).check().unwrap_err()), "to");
        assert_eq!(field(spec("ops@example.org", SmtpTls::None, Some("pw")).check().unwrap_err()), "smtp.tls");
    }

    #[test]
    fn filters_apply_to_their_event_only() {
        let f = Filter { status: vec!["failed".into()], ..Filter::default() };
        assert!(f.check("job.finished").is_ok());
        assert_eq!(field(f.check("audit.alert").unwrap_err()), "filter.status");
        let f = Filter { status: vec!["exploded".into()], ..Filter::default() };
        assert_eq!(field(f.check("job.finished").unwrap_err()), "filter.status");
        assert_eq!(field(Filter::default().check("job.started").unwrap_err()), "event");
        let f = Filter { window_secs: Some(0), ..Filter::default() };
        assert_eq!(field(f.check("audit.alert").unwrap_err()), "filter.window_secs");
    }
}
