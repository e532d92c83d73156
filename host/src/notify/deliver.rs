//! Sending due deliveries: one at a time per channel and at most `rate_per_minute` a minute each, every attempt
//! logged, failures retried with exponential backoff (with jitter) until the delivery's deadline. Sent and failed
//! deliveries are pruned after `keep_hours`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{
    message,
    send::{self, Answer, Outgoing},
    ChannelConfig, ChannelKind, Notice, Notifications,
};
use crate::store::{now_ms, AttemptOutcome, DeliveryRow};

/// How often due deliveries are looked for when nothing wakes the task earlier.
const POLL: Duration = Duration::from_millis(500);
/// Due deliveries read per pass.
const BATCH: i64 = 200;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Sends until `shutdown`; sends in flight then finish on their own (each is bounded by its timeouts).
pub async fn run(notify: Arc<Notifications>, shutdown: CancellationToken) {
    let client = match send::http_client() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "notifications disabled: cannot build the HTTP client");
            return;
        }
    };
    let interval_ms = 60_000 / i64::from(notify.config().rate_per_minute.max(1));
    match notify.store().release_sending().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(deliveries = n, "notifications interrupted while sending will be sent again"),
        Err(err) => tracing::warn!(error = %err, "cannot release interrupted notifications"),
    }
    let busy: Arc<Mutex<HashSet<i64>>> = Arc::default();
    // When each channel may be sent to next.
    let mut allowed: HashMap<i64, i64> = HashMap::new();
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            prune(&notify).await;
        }
        let now = now_ms();
        match notify.store().due_deliveries(now, BATCH).await {
            Ok(due) => {
                for delivery in due {
                    let channel = delivery.channel_id;
                    if lock(&busy).contains(&channel) || allowed.get(&channel).is_some_and(|at| *at > now) {
                        continue;
                    }
                    lock(&busy).insert(channel);
                    allowed.insert(channel, now + interval_ms);
                    let (notify, client, busy) = (notify.clone(), client.clone(), busy.clone());
                    tokio::spawn(async move {
                        attempt(&notify, &client, delivery).await;
                        lock(&busy).remove(&channel);
                        // The channel's next delivery may be due already.
                        notify.wake();
                    });
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read due notifications"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = notify.woken() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn lock(set: &Mutex<HashSet<i64>>) -> std::sync::MutexGuard<'_, HashSet<i64>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

async fn prune(notify: &Notifications) {
    let before = now_ms().saturating_sub(super::secs_ms(notify.config().keep_hours.saturating_mul(3600)));
    match notify.store().prune_deliveries(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deliveries = n, "old notifications pruned"),
        Err(err) => tracing::warn!(error = %err, "cannot prune old notifications"),
    }
}

/// One attempt of one delivery, logged with its outcome.
async fn attempt(notify: &Notifications, client: &reqwest::Client, delivery: DeliveryRow) {
    let store = notify.store();
    if let Some(at) = too_soon(notify, &delivery).await {
        // Its group's window is still open: it waits (and goes on counting matches) until it closes.
        if let Err(err) = store.postpone_delivery(delivery.id, at).await {
            tracing::warn!(delivery_id = delivery.id, error = %err, "cannot postpone a grouped notification");
        }
        return;
    }
    let delivery = match store.claim_delivery(delivery.id).await {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(delivery_id = delivery.id, error = %err, "cannot take a notification; trying later");
            return;
        }
    };
    let channel = match store.notify_channel(delivery.channel_id).await {
        Ok(Some(channel)) => channel,
        Ok(None) => {
            let _ = store.drop_delivery(delivery.id, "the channel was deleted").await;
            return;
        }
        Err(err) => {
            tracing::warn!(delivery_id = delivery.id, error = %err, "cannot read the channel; trying later");
            let _ = store
                .record_attempt(&delivery, false, &err.to_string(), AttemptOutcome::Retry(now_ms() + 10_000))
                .await;
            return;
        }
    };
    let parsed = (
        ChannelKind::parse(&channel.kind),
        serde_json::from_str::<ChannelConfig>(&channel.config),
        serde_json::from_str::<Notice>(&delivery.payload),
    );
    let answer = match parsed {
        (Some(kind), Ok(config), Ok(notice)) => {
            let message = message::compose(&notice, delivery.match_count, &notify.public_url());
            let out = Outgoing {
                uid: &delivery.uid,
                created_at: delivery.created_at,
                attempt: delivery.attempts + 1,
                count: delivery.match_count,
                notice: &notice,
                message: &message,
            };
            send::send(client, kind, &config, channel.secret.as_deref(), &out).await
        }
        _ => Answer::Refused("the channel or the notification is damaged".into()),
    };
    let attempts = delivery.attempts + 1;
    let (ok, text, outcome) = match answer {
        Answer::Taken(text) => (true, text, AttemptOutcome::Sent),
        Answer::Refused(text) => (false, text, AttemptOutcome::Failed),
        Answer::Retry(text) => {
            let next = now_ms().saturating_add(backoff_ms(notify, attempts));
            if next > delivery.deadline {
                (false, format!("{text} (gave up after {attempts} attempts)"), AttemptOutcome::Failed)
            } else {
                (false, text, AttemptOutcome::Retry(next))
            }
        }
    };
    let status = match outcome {
        AttemptOutcome::Sent => "sent",
        AttemptOutcome::Retry(_) => "retry",
        AttemptOutcome::Failed => "failed",
    };
    // The answer is the receiver's words or an error: never the secret or the body sent.
    tracing::info!(delivery_id = delivery.id, channel = %channel.name, attempt = attempts, outcome = status, answer = %text, "notification attempt");
    if let Err(err) = store.record_attempt(&delivery, ok, &text, outcome).await {
        tracing::error!(delivery_id = delivery.id, error = %err, "cannot record a notification attempt");
    }
}

/// When a storm group's delivery may go, if not now: one window after the group's last sent message (sent time,
/// not due time: a late send must not shorten the next window).
async fn too_soon(notify: &Notifications, delivery: &DeliveryRow) -> Option<i64> {
    let key = delivery.group_key.as_deref()?;
    let window = super::intake::group_window(key)?;
    let sent = notify.store().last_sent_in_group(key).await.ok()??;
    let at = sent.saturating_add(window);
    (at > now_ms()).then_some(at)
}

/// The wait after the `attempt`-th failure: base × 2^(attempt−1), at most the configured maximum, ±10 %.
fn backoff_ms(notify: &Notifications, attempt: i64) -> i64 {
    let config = notify.config();
    let base = config.retry_base_secs.max(1).saturating_mul(1000);
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let wait = base.saturating_mul(1u64 << exponent).min(config.retry_max_secs.saturating_mul(1000).max(base));
    let jitter = rand::rng().random_range(0.9..=1.1);
    i64::try_from((wait as f64 * jitter) as u64).unwrap_or(i64::MAX)
}
