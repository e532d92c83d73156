//! Notifications: tell someone, reliably, when a job ends, a schedule misses, an alert rule matches or the fleet
//! needs attention, without ever slowing the job or audit paths.
//!
//! - Facts reach this room without anyone waiting on it: a finished job and a missed or failed fire write a
//!   `notify_events` row in the transaction that stores them; audit alert matches are read from the audit log's
//!   live stream, with a stored cursor to catch up from after a restart or a lag; module rejections, backend
//!   health and chain verification are watched here ([`watch`]).
//! - [`intake`] turns each fact into one delivery per matching subscription (in the transaction that deletes the
//!   fact), grouping alert storms: at most one message per rule and subscription per window, with the true count.
//! - [`deliver`] sends due deliveries, one at a time per channel and within its rate, retrying with exponential
//!   backoff until the deadline, logging every attempt. A delivery is sent at least once; a crash in the middle
//!   of a send may repeat it, with the same `id`.

pub mod deliver;
pub mod intake;
pub mod message;
pub mod notice;
pub mod send;
pub mod spec;
pub mod watch;

use std::{sync::Arc, time::Duration};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::store::{
    AttemptRow, ChannelRow, DeliveryQuery, DeliveryRow, NewDelivery, Store, StoreError, SubscriptionRow,
};
pub use notice::Notice;
pub use spec::{ChannelConfig, ChannelKind, ChannelSpec, Filter, SubscriptionSpec};

/// The `[notify]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// The first retry waits this long; each next one twice as long.
    pub retry_base_secs: u64,
    /// No wait between retries is longer.
    pub retry_max_secs: u64,
    /// A delivery not taken this long after it was made fails.
    pub give_up_secs: u64,
    /// Most messages per minute to one channel.
    pub rate_per_minute: u32,
    /// Sent and failed deliveries are deleted after this many hours.
    pub keep_hours: u64,
    /// At most this many deliveries wait per channel; more fail at once ("outbox full") rather than pile up.
    pub max_pending_per_channel: i64,
    /// The storm window of audit alerts when a subscription does not set one.
    pub alert_window_secs: u64,
    /// How often backends' health is checked.
    pub check_every_secs: u64,
    /// How often the audit chain is verified (0: never).
    pub verify_every_secs: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            retry_base_secs: 10,
            retry_max_secs: 3600,
            give_up_secs: 86_400,
            rate_per_minute: 30,
            keep_hours: 7 * 24,
            max_pending_per_channel: 1000,
            alert_window_secs: 300,
            check_every_secs: 60,
            verify_every_secs: 3600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("delivery {0} is {1}: only a failed delivery is sent again")]
    NotFailed(i64, String),
    /// A stored row that no longer parses.
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A channel as the API shows it: never its secret; a Slack URL (which is its own secret) only by host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub id: i64,
    pub name: String,
    pub kind: ChannelKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<spec::Smtp>,
    pub created_by: String,
    pub created_at: i64,
}

/// What creating a channel answers: its id and, for a webhook, the signing secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelCreated {
    pub id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: i64,
    pub channel: i64,
    pub channel_name: String,
    pub event: String,
    pub filter: Filter,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// The idempotency id the receiver sees.
    pub uid: String,
    pub event: String,
    pub channel: i64,
    pub channel_name: String,
    pub subscription: Option<i64>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// How many matches it reports (more than 1 for a grouped alert).
    pub count: i64,
    pub title: String,
    pub last_error: Option<String>,
    pub created_at: i64,
    /// When the next attempt is due (pending ones).
    pub next_at: i64,
    pub sent_at: Option<i64>,
    /// Every attempt, oldest first (only when one delivery is asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<AttemptRow>>,
}

/// The room's handle: the API's calls, and what the intake and delivery tasks share.
pub struct Notifications {
    store: Store,
    config: NotifyConfig,
    /// The console's address as people reach it, for links (the listening address once known, when unset).
    public_url: std::sync::RwLock<String>,
    /// Woken when a delivery becomes due now (a new fact, a test, a resend).
    wake: tokio::sync::Notify,
}

impl Notifications {
    pub fn new(store: Store, config: NotifyConfig, public_url: String) -> Arc<Notifications> {
        let public_url = std::sync::RwLock::new(public_url);
        Arc::new(Notifications { store, config, public_url, wake: tokio::sync::Notify::new() })
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    pub fn public_url(&self) -> String {
        self.public_url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the base of links once the listening address is known (when `public_url` is not configured).
    pub fn set_public_url(&self, url: String) {
        *self.public_url.write().unwrap_or_else(|e| e.into_inner()) = url;
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Tells the delivery task to look now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    pub async fn channels(&self) -> Result<Vec<ChannelView>, NotifyError> {
        self.store.notify_channels().await?.into_iter().map(channel_view).collect()
    }

    pub async fn add_channel(&self, spec: ChannelSpec, by: &str) -> Result<ChannelCreated, NotifyError> {
        let (name, kind, config, password) = spec.check()?;
        let config_json = serde_json::to_string(&config).map_err(|e| NotifyError::Damaged(e.to_string()))?;
        let signing = (kind == ChannelKind::Webhook).then(new_secret);
        let secret = signing.clone().or(password);
        let id =
            self.store.add_notify_channel(&name, kind.as_str(), &config_json, secret.as_deref(), by).await.map_err(
                |e| match e {
                    StoreError::Conflict(reason) => NotifyError::Invalid { field: "name".into(), reason },
                    other => other.into(),
                },
            )?;
        tracing::info!(channel_id = id, channel = %name, kind = kind.as_str(), by, "notification channel created");
        Ok(ChannelCreated { id, secret: signing })
    }

    pub async fn delete_channel(&self, id: i64, by: &str) -> Result<(), NotifyError> {
        if !self.store.delete_notify_channel(id).await? {
            return Err(NotifyError::NotFound(format!("channel {id}")));
        }
        tracing::info!(channel_id = id, by, "notification channel deleted");
        Ok(())
    }

    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionView>, NotifyError> {
        let channels = self.store.notify_channels().await?;
        self.store
            .notify_subscriptions()
            .await?
            .into_iter()
            .map(|row| {
                let name = channels.iter().find(|c| c.id == row.channel_id).map(|c| c.name.clone());
                subscription_view(row, name.unwrap_or_default())
            })
            .collect()
    }

    pub async fn add_subscription(&self, spec: SubscriptionSpec, by: &str) -> Result<i64, NotifyError> {
        if self.store.notify_channel(spec.channel).await?.is_none() {
            return Err(spec::invalid("channel", format!("no channel {}", spec.channel)));
        }
        spec.filter.check(&spec.event)?;
        self.check_names(&spec.filter).await?;
        let filter = serde_json::to_string(&spec.filter).map_err(|e| NotifyError::Damaged(e.to_string()))?;
        let id = self.store.add_notify_subscription(spec.channel, &spec.event, &filter, by).await?;
        tracing::info!(subscription_id = id, channel_id = spec.channel, event = %spec.event, by, "subscribed");
        Ok(id)
    }

    /// A filter naming a rule, saved job, schedule or backend that does not exist would never match: refuse it.
    async fn check_names(&self, filter: &Filter) -> Result<(), NotifyError> {
        if let Some(rule) = &filter.rule {
            if !self.store.alert_rules().await?.iter().any(|r| &r.name == rule) {
                return Err(spec::invalid("filter.rule", format!("no alert rule named {rule:?}")));
            }
        }
        if let Some(template) = &filter.template {
            if !self.store.list_templates().await?.iter().any(|t| &t.name == template) {
                return Err(spec::invalid("filter.template", format!("no saved job named {template:?}")));
            }
        }
        if let Some(schedule) = &filter.schedule {
            if !self.store.list_schedules().await?.iter().any(|s| &s.name == schedule) {
                return Err(spec::invalid("filter.schedule", format!("no schedule named {schedule:?}")));
            }
        }
        if let Some(backend) = &filter.backend {
            const BACKENDS: &[&str] = &["local", "ssh", "ansible", "saltstack", "func"];
            if !BACKENDS.contains(&backend.as_str()) {
                return Err(spec::invalid("filter.backend", format!("one of {}", BACKENDS.join(", "))));
            }
        }
        Ok(())
    }

    pub async fn delete_subscription(&self, id: i64, by: &str) -> Result<(), NotifyError> {
        if !self.store.delete_notify_subscription(id).await? {
            return Err(NotifyError::NotFound(format!("subscription {id}")));
        }
        tracing::info!(subscription_id = id, by, "unsubscribed");
        Ok(())
    }

    pub async fn deliveries(&self, filter: &DeliveryQuery) -> Result<Vec<DeliveryView>, NotifyError> {
        let channels = self.store.notify_channels().await?;
        let rows = self.store.query_deliveries(filter).await?;
        Ok(rows.into_iter().map(|row| self.delivery_view(row, &channels, None)).collect())
    }

    pub async fn delivery(&self, id: i64) -> Result<DeliveryView, NotifyError> {
        let row = self.store.delivery(id).await?.ok_or_else(|| NotifyError::NotFound(format!("delivery {id}")))?;
        let channels = self.store.notify_channels().await?;
        let log = self.store.delivery_attempts(id).await?;
        Ok(self.delivery_view(row, &channels, Some(log)))
    }

    fn delivery_view(&self, row: DeliveryRow, channels: &[ChannelRow], log: Option<Vec<AttemptRow>>) -> DeliveryView {
        let channel_name = channels.iter().find(|c| c.id == row.channel_id).map(|c| c.name.clone());
        let title = serde_json::from_str::<Notice>(&row.payload)
            .map(|n| message::one_line(&message::compose(&n, row.match_count, &self.public_url()).title))
            .unwrap_or_else(|_| row.event.clone());
        DeliveryView {
            id: row.id,
            uid: row.uid,
            event: row.event,
            channel: row.channel_id,
            channel_name: channel_name.unwrap_or_default(),
            subscription: row.subscription_id,
            // `sending` is a pending delivery in the middle of an attempt.
            status: if row.status == "sending" { "pending".to_owned() } else { row.status },
            attempts: row.attempts,
            count: row.match_count,
            title,
            last_error: row.last_error,
            created_at: row.created_at,
            next_at: row.next_at,
            sent_at: row.sent_at,
            log,
        }
    }

    /// Sends a test message through a channel now and waits (up to `wait`) for the first attempt's answer.
    pub async fn test_channel(&self, id: i64, by: &str, wait: Duration) -> Result<DeliveryView, NotifyError> {
        if self.store.notify_channel(id).await?.is_none() {
            return Err(NotifyError::NotFound(format!("channel {id}")));
        }
        let notice = Notice::Test { by: by.to_owned() };
        let delivery = self.new_delivery(id, None, &notice, None, crate::store::now_ms())?;
        let uid = delivery.uid.clone();
        self.store.insert_deliveries(&[delivery]).await?;
        self.wake();
        let started = tokio::time::Instant::now();
        loop {
            let found = self.store.delivery_by_uid(&uid).await?;
            let Some(row) = found else { return Err(NotifyError::NotFound(format!("test delivery {uid}"))) };
            if row.attempts > 0 || started.elapsed() >= wait {
                return self.delivery(row.id).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a failed delivery again, with a fresh deadline.
    pub async fn resend(&self, id: i64, by: &str) -> Result<DeliveryView, NotifyError> {
        let row = self.store.delivery(id).await?.ok_or_else(|| NotifyError::NotFound(format!("delivery {id}")))?;
        if row.status != "failed" {
            return Err(NotifyError::NotFailed(id, row.status));
        }
        self.store.resend_delivery(id, self.deadline(crate::store::now_ms())).await?;
        tracing::info!(delivery_id = id, by, "delivery sent again");
        self.wake();
        self.delivery(id).await
    }

    /// When a delivery made at `now` stops being retried.
    fn deadline(&self, now: i64) -> i64 {
        now.saturating_add(secs_ms(self.config.give_up_secs))
    }

    /// A delivery of `notice` to a channel, due at `next_at`.
    pub(crate) fn new_delivery(
        &self,
        channel_id: i64,
        subscription_id: Option<i64>,
        notice: &Notice,
        group_key: Option<String>,
        next_at: i64,
    ) -> Result<NewDelivery, NotifyError> {
        Ok(NewDelivery {
            uid: new_uid(),
            channel_id,
            subscription_id,
            event: notice.event().to_owned(),
            group_key,
            payload: serde_json::to_string(notice).map_err(|e| NotifyError::Damaged(e.to_string()))?,
            count: 1,
            next_at,
            deadline: self.deadline(next_at),
            dropped: None,
        })
    }
}

pub(crate) fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A webhook's signing secret: 40 letters and digits (about 238 bits).
fn new_secret() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect()
}

/// A delivery's idempotency id: 128 random bits in hex.
fn new_uid() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

fn channel_view(row: ChannelRow) -> Result<ChannelView, NotifyError> {
    let kind = ChannelKind::parse(&row.kind)
        .ok_or_else(|| NotifyError::Damaged(format!("channel {} has kind {:?}", row.id, row.kind)))?;
    let config: ChannelConfig = serde_json::from_str(&row.config)
        .map_err(|e| NotifyError::Damaged(format!("channel {} settings: {e}", row.id)))?;
    // A Slack incoming-webhook URL carries its token in the path: show where it goes, not the token.
    let url = match kind {
        ChannelKind::Slack => config
            .url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or_default())),
        _ => config.url,
    };
    Ok(ChannelView {
        id: row.id,
        name: row.name,
        kind,
        url,
        to: config.to,
        from: config.from,
        smtp: config.smtp,
        created_by: row.created_by,
        created_at: row.created_at,
    })
}

fn subscription_view(row: SubscriptionRow, channel_name: String) -> Result<SubscriptionView, NotifyError> {
    let filter = serde_json::from_str(&row.filter)
        .map_err(|e| NotifyError::Damaged(format!("subscription {} filter: {e}", row.id)))?;
    Ok(SubscriptionView {
        id: row.id,
        channel: row.channel_id,
        channel_name,
        event: row.event,
        filter,
        created_by: row.created_by,
        created_at: row.created_at,
    })
}
