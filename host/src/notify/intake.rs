//! From facts to deliveries. Two feeds:
//!
//! - the `notify_events` outbox (finished jobs, missed or failed fires, and what [`super::watch`] records): each
//!   fact becomes one delivery per matching subscription, in the transaction that deletes it;
//! - the audit log, read from its live stream and, after a restart or a lag, from the rows past the stored cursor
//!   (on PostgreSQL, which servers may share, only from the rows: the live stream has only this server's):
//!   every row matching an alert rule is counted into its subscription's storm group.
//!
//! One server of a database runs them at a time (`crate::cluster::lead`).
//!
//! Neither feed makes the job or audit paths wait: they wrote their rows and went on.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{
    notice::{clip, AlertNotice, FireNotice, JobNotice, Notice},
    secs_ms, Filter, Notifications, NotifyError,
};
use crate::{
    audit::AuditService,
    plugins::Registry,
    store::{
        now_ms, AuditQuery, AuditRow, DeliveryRow, EventRow, NewDelivery, Store, SubscriptionRow, JOB_APPROVAL,
        JOB_FINISHED, SCHEDULE_FIRE,
    },
};

/// How often the outbox is read when nothing wakes the intake earlier.
const POLL: Duration = Duration::from_millis(500);
/// Facts expanded per pass.
const BATCH: i64 = 100;
/// Audit rows read per query when catching up.
const AUDIT_PAGE: i64 = 500;
/// How often the audit cursor is saved when no alert moved it.
const CURSOR_EVERY: Duration = Duration::from_secs(10);
const AUDIT_CURSOR: &str = "audit";
/// How often the alert feed writes what it has read from the live stream.
const TAKE_EVERY: Duration = Duration::from_secs(1);
/// Matching rows held before a write regardless of time (bounds the feed's memory).
const MAX_PENDING_ROWS: usize = 20_000;

/// Reads the outbox until `shutdown`.
pub async fn run_events(notify: Arc<Notifications>, registry: Arc<Registry>, shutdown: CancellationToken) {
    loop {
        match expand_pending(&notify, &registry).await {
            Ok(0) => {}
            Ok(_) => {
                notify.wake();
                continue;
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the notification outbox"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Expands one batch of facts; returns how many.
async fn expand_pending(notify: &Notifications, registry: &Registry) -> Result<usize, NotifyError> {
    let store = notify.store();
    let events = store.pending_notify_events(BATCH).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let subscriptions = store.notify_subscriptions().await?;
    for event in &events {
        let deliveries = match notice_of(store, registry, event).await {
            Ok(Some(notice)) => deliveries_for(notify, &subscriptions, &notice, now_ms()).await?,
            // The subject is gone (a deleted schedule): nothing to say.
            Ok(None) => Vec::new(),
            Err(err) => {
                tracing::warn!(event_id = event.id, kind = %event.kind, error = %err, "notification fact dropped");
                Vec::new()
            }
        };
        store.expand_notify_event(event.id, &deliveries).await?;
    }
    Ok(events.len())
}

/// What a stored fact says, read back from the rows it is about.
async fn notice_of(store: &Store, registry: &Registry, event: &EventRow) -> Result<Option<Notice>, NotifyError> {
    let detail = || -> Result<serde_json::Value, NotifyError> {
        let text = event.detail.as_deref().unwrap_or("{}");
        serde_json::from_str(text).map_err(|e| NotifyError::Damaged(format!("event {} detail: {e}", event.id)))
    };
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    match event.kind.as_str() {
        JOB_FINISHED | JOB_APPROVAL => {
            let Some(id) = event.subject_id else { return Ok(None) };
            let Some(job) = store.job(id).await? else { return Ok(None) };
            let results = store.job_results(id).await?;
            let module_name =
                u32::try_from(job.module_id).ok().and_then(|m| registry.get(m)).map(|m| m.meta.name.to_string());
            let template = match job.template_id {
                Some(t) => store.template(t).await?.map(|t| t.name),
                None => None,
            };
            let mut notice = JobNotice::new(&job, &results, module_name, template);
            let names: Vec<String> = serde_json::from_str(&job.hosts).unwrap_or_default();
            let mut apps: Vec<String> =
                store.find_hosts(&names).await?.into_iter().filter_map(|h| h.app).collect::<Vec<_>>();
            apps.sort();
            apps.dedup();
            notice.apps = apps;
            Ok(Some(if event.kind == JOB_APPROVAL { Notice::JobApproval(notice) } else { Notice::JobFinished(notice) }))
        }
        SCHEDULE_FIRE => {
            let Some(schedule_id) = event.subject_id else { return Ok(None) };
            let slot = detail()?["slot"].as_i64().unwrap_or_default();
            let Some(schedule) = store.schedule(schedule_id).await? else { return Ok(None) };
            let Some(fire) = store.schedule_fire(schedule_id, slot).await? else { return Ok(None) };
            Ok(Some(Notice::ScheduleFire(FireNotice {
                schedule_id,
                schedule: schedule.name,
                slot,
                outcome: fire.outcome,
                reason: fire.reason,
            })))
        }
        "module.rejected" => {
            let d = detail()?;
            Ok(Some(Notice::ModuleRejected { file: text(&d, "file"), reason: clip(&text(&d, "reason")) }))
        }
        "backend.unhealthy" => {
            let d = detail()?;
            Ok(Some(Notice::BackendUnhealthy { backend: text(&d, "backend"), detail: clip(&text(&d, "detail")) }))
        }
        "audit.verify" => {
            let d = detail()?;
            Ok(Some(Notice::AuditVerify {
                findings: usize::try_from(d["findings"].as_u64().unwrap_or_default()).unwrap_or(usize::MAX),
                hosts: usize::try_from(d["hosts"].as_u64().unwrap_or_default()).unwrap_or(usize::MAX),
                first: clip(&text(&d, "first")),
            }))
        }
        other => Err(NotifyError::Damaged(format!("unknown fact kind {other:?}"))),
    }
}

/// One delivery per subscription that wants `notice`; a channel whose outbox is full gets a failed one instead.
async fn deliveries_for(
    notify: &Notifications,
    subscriptions: &[SubscriptionRow],
    notice: &Notice,
    now: i64,
) -> Result<Vec<NewDelivery>, NotifyError> {
    let mut out = Vec::new();
    for sub in subscriptions.iter().filter(|s| s.event == notice.event()) {
        let Ok(filter) = serde_json::from_str::<Filter>(&sub.filter) else {
            tracing::warn!(subscription_id = sub.id, "subscription filter unreadable; skipped");
            continue;
        };
        if !wants(&filter, notice) {
            continue;
        }
        let mut delivery = notify.new_delivery(sub.channel_id, Some(sub.id), notice, None, now)?;
        delivery.dropped = outbox_full(notify, sub.channel_id).await?;
        out.push(delivery);
    }
    Ok(out)
}

/// Whether the channel already holds as many waiting deliveries as allowed, and if so the reason to give.
async fn outbox_full(notify: &Notifications, channel_id: i64) -> Result<Option<String>, NotifyError> {
    let max = notify.config().max_pending_per_channel;
    let pending = notify.store().pending_deliveries(channel_id).await?;
    Ok((pending >= max).then(|| format!("not sent: the channel's outbox is full ({pending} waiting, at most {max})")))
}

/// Whether a subscription's filter lets `notice` through.
fn wants(filter: &Filter, notice: &Notice) -> bool {
    match notice {
        Notice::JobApproval(job) => {
            filter.module.is_none_or(|m| i64::from(m) == job.module)
                && filter.template.as_ref().is_none_or(|t| job.template.as_ref() == Some(t))
                && filter.app.as_ref().is_none_or(|a| job.apps.contains(a))
        }
        Notice::JobFinished(job) => {
            (filter.status.is_empty() || filter.status.contains(&job.status))
                && filter.module.is_none_or(|m| i64::from(m) == job.module)
                && filter.template.as_ref().is_none_or(|t| job.template.as_ref() == Some(t))
                && filter.app.as_ref().is_none_or(|a| job.apps.contains(a))
        }
        Notice::ScheduleFire(fire) => {
            (filter.outcome.is_empty() || filter.outcome.contains(&fire.outcome))
                && filter.schedule.as_ref().is_none_or(|s| *s == fire.schedule)
        }
        Notice::AuditAlert(alert) => filter.rule.as_ref().is_none_or(|r| *r == alert.rule),
        Notice::BackendUnhealthy { backend, .. } => filter.backend.as_ref().is_none_or(|b| b == backend),
        Notice::ModuleRejected { .. } | Notice::AuditVerify { .. } | Notice::Test { .. } => true,
    }
}

/// Follows the audit log until `shutdown`: the live stream while it keeps up, the stored rows past the cursor
/// at start and whenever the stream lagged.
pub async fn run_alerts(notify: Arc<Notifications>, audit: Arc<AuditService>, shutdown: CancellationToken) {
    // Subscribe before reading the backlog, so that no row falls between the two.
    let mut live = audit.subscribe();
    let mut feed =
        AlertFeed { notify, audit, cursor: 0, saved: 0, last_save: tokio::time::Instant::now(), subscriptions: None };
    loop {
        match feed.notify.store().notify_cursor(AUDIT_CURSOR).await {
            Ok(cursor) => {
                feed.cursor = cursor;
                feed.saved = cursor;
                break;
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the audit cursor; trying again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    if feed.notify.store().shared_by_servers() {
        // Servers may share it: this one's live stream carries only the rows it ingested, the database all of them.
        drop(live);
        return feed.follow_stored(shutdown).await;
    }
    let mut behind = true;
    // The rows that match a rule, and the newest row id received: the rest is not kept. Holding every row of a
    // second of busy ingest (150 000) and matching them in one go made the feed miss the live stream, which then
    // sent it back to reading the rows from the database (BENCHMARKS.md § Notifications).
    let mut pending: Vec<Arc<AuditRow>> = Vec::new();
    let mut newest = 0;
    let mut last_take = tokio::time::Instant::now();
    loop {
        if behind {
            match feed.catch_up().await {
                Ok(()) => behind = false,
                Err(err) => tracing::warn!(error = %err, "cannot read the audit log for alerts; trying again"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = feed.save_cursor().await;
                return;
            }
            received = live.recv() => match received {
                Ok(row) => {
                    feed.keep(&mut pending, &mut newest, row);
                    // Take what else is waiting.
                    while let Ok(row) = live.try_recv() {
                        feed.keep(&mut pending, &mut newest, row);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "alert feed fell behind the live stream; reading the stored rows");
                    pending.clear();
                    newest = 0;
                    behind = true;
                }
                Err(RecvError::Closed) => return,
            },
            // Wakes the feed to write what it holds (the live stream may fall quiet).
            _ = tokio::time::sleep(if newest > feed.cursor { TAKE_EVERY } else { CURSOR_EVERY }) => {}
        }
        // One write transaction a second at most: each is a durable commit that the audit writer would otherwise
        // wait for (SQLite has one writer), and a burst of matches is one storm anyway.
        if newest > feed.cursor && (last_take.elapsed() >= TAKE_EVERY || pending.len() >= MAX_PENDING_ROWS) {
            last_take = tokio::time::Instant::now();
            if let Err(err) = feed.take(std::mem::take(&mut pending), newest).await {
                tracing::warn!(error = %err, "alert notifications not recorded; reading the stored rows again");
                behind = true;
            }
        }
        if feed.last_save.elapsed() >= CURSOR_EVERY {
            if let Err(err) = feed.save_cursor().await {
                tracing::warn!(error = %err, "cannot save the audit cursor");
            }
        }
    }
}

struct AlertFeed {
    notify: Arc<Notifications>,
    audit: Arc<AuditService>,
    /// The last audit row taken.
    cursor: i64,
    /// The cursor as stored.
    saved: i64,
    last_save: tokio::time::Instant,
    /// The audit.alert subscriptions, read at most once a second (a busy ingest publishes many bursts).
    subscriptions: Option<(tokio::time::Instant, Arc<Vec<SubscriptionRow>>)>,
}

/// How long the alert feed keeps its copy of the subscriptions.
const SUBSCRIPTIONS_FOR: Duration = Duration::from_secs(1);

impl AlertFeed {
    async fn alert_subscriptions(&mut self) -> Result<Arc<Vec<SubscriptionRow>>, NotifyError> {
        if let Some((at, subs)) = &self.subscriptions {
            if at.elapsed() < SUBSCRIPTIONS_FOR {
                return Ok(subs.clone());
            }
        }
        let subs: Vec<SubscriptionRow> = self
            .notify
            .store()
            .notify_subscriptions()
            .await?
            .into_iter()
            .filter(|s| s.event == "audit.alert")
            .collect();
        let subs = Arc::new(subs);
        self.subscriptions = Some((tokio::time::Instant::now(), subs.clone()));
        Ok(subs)
    }

    /// Notes a row from the live stream: its id, and the row itself when it matches a rule (most rows match
    /// nothing). Whether anyone subscribed is asked at the take, so that a new subscription is seen there.
    fn keep(&self, pending: &mut Vec<Arc<AuditRow>>, newest: &mut i64, row: Arc<AuditRow>) {
        if row.id <= self.cursor {
            return;
        }
        *newest = (*newest).max(row.id);
        if !self.audit.alerts_of(&row).is_empty() {
            pending.push(row);
        }
    }

    /// Takes the stored rows past the cursor every [`TAKE_EVERY`] until `shutdown` (a database servers share).
    async fn follow_stored(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.catch_up().await {
                tracing::warn!(error = %err, "cannot read the audit log for alerts; trying again");
            }
            if self.last_save.elapsed() >= CURSOR_EVERY {
                if let Err(err) = self.save_cursor().await {
                    tracing::warn!(error = %err, "cannot save the audit cursor");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.save_cursor().await;
                    return;
                }
                _ = tokio::time::sleep(TAKE_EVERY) => {}
            }
        }
    }

    /// Takes every stored row past the cursor.
    async fn catch_up(&mut self) -> Result<(), NotifyError> {
        loop {
            let query = AuditQuery { after: Some(self.cursor), limit: AUDIT_PAGE, ..AuditQuery::default() };
            let rows = self.notify.store().query_audit(&query).await?;
            let full = rows.len() as i64 == AUDIT_PAGE;
            let Some(last) = rows.iter().map(|r| r.id).max() else { return Ok(()) };
            self.take(rows.into_iter().map(Arc::new).collect(), last).await?;
            if !full {
                return Ok(());
            }
        }
    }

    async fn save_cursor(&mut self) -> Result<(), NotifyError> {
        self.last_save = tokio::time::Instant::now();
        if self.saved == self.cursor {
            return Ok(());
        }
        self.notify.store().record_alert_deliveries((AUDIT_CURSOR, self.cursor), &[], &[]).await?;
        self.saved = self.cursor;
        Ok(())
    }

    /// Counts the rows' alert matches into their groups and moves the cursor to `last` (the newest row read, which
    /// `rows` may not hold), in one transaction when anything matched (otherwise the cursor is saved later: reading
    /// rows again finds nothing to count).
    async fn take(&mut self, rows: Vec<Arc<AuditRow>>, last: i64) -> Result<(), NotifyError> {
        if last <= self.cursor {
            return Ok(());
        }
        let rows: Vec<Arc<AuditRow>> = rows.into_iter().filter(|r| r.id > self.cursor).collect();
        let subscriptions = self.alert_subscriptions().await?;
        // group key → (subscription, its window, the first match's notice, matches, newest command)
        let mut groups: HashMap<String, (i64, i64, AlertNotice, i64, Option<String>)> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        if !subscriptions.is_empty() {
            for row in &rows {
                // Most rows match nothing: only those are looked at further.
                if self.audit.alerts_of(row).is_empty() {
                    continue;
                }
                let view = self.audit.view(row.as_ref()).await;
                for rule in &view.alerts {
                    for sub in subscriptions.iter() {
                        let filter: Filter = serde_json::from_str(&sub.filter).unwrap_or_default();
                        if filter.rule.as_ref().is_some_and(|r| r != rule) {
                            continue;
                        }
                        let window = filter.window_secs.unwrap_or(self.notify.config().alert_window_secs);
                        let key = group_key(sub.id, secs_ms(window), rule);
                        match groups.get_mut(&key) {
                            Some(group) => {
                                group.3 += 1;
                                group.4 = Some(clip(&view.command));
                            }
                            None => {
                                let notice = AlertNotice {
                                    rule: rule.clone(),
                                    event_id: view.id,
                                    host: view.host.clone(),
                                    host_id: row.host_id,
                                    user: view.user.clone(),
                                    login_user: view.login_user.clone(),
                                    tty: view.tty.clone(),
                                    command: clip(&view.command),
                                    datetime: view.datetime.clone(),
                                    last_command: None,
                                };
                                order.push(key.clone());
                                groups.insert(key, (sub.id, secs_ms(window), notice, 1, None));
                            }
                        }
                    }
                }
            }
        }
        if groups.is_empty() {
            self.cursor = last;
            return Ok(());
        }
        let now = now_ms();
        let mut new = Vec::new();
        let mut grown = Vec::new();
        for key in order {
            let Some((sub_id, window, notice, matches, newest)) = groups.remove(&key) else { continue };
            let Some(sub) = subscriptions.iter().find(|s| s.id == sub_id) else { continue };
            let last_delivery = self.notify.store().last_in_group(&key).await?;
            match storm_step(last_delivery.as_ref(), window, now) {
                Step::Grow(open) => {
                    let mut payload: Notice = serde_json::from_str(&open.payload)
                        .map_err(|e| NotifyError::Damaged(format!("delivery {} payload: {e}", open.id)))?;
                    if let Notice::AuditAlert(first) = &mut payload {
                        first.last_command = newest.or(Some(notice.command.clone()));
                    }
                    let text = serde_json::to_string(&payload).map_err(|e| NotifyError::Damaged(e.to_string()))?;
                    grown.push((open.id, matches, text));
                }
                Step::New(due) => {
                    let mut notice = notice;
                    notice.last_command = newest;
                    let notice = Notice::AuditAlert(notice);
                    let mut delivery =
                        self.notify.new_delivery(sub.channel_id, Some(sub_id), &notice, Some(key), due)?;
                    delivery.dropped = outbox_full(&self.notify, sub.channel_id).await?;
                    delivery.count = matches;
                    new.push(delivery);
                }
            }
        }
        self.notify.store().record_alert_deliveries((AUDIT_CURSOR, last), &new, &grown).await?;
        self.cursor = last;
        self.saved = last;
        self.notify.wake();
        Ok(())
    }
}

/// A storm group: a subscription's rule, with its window (read back by the sender, which keeps the spacing).
fn group_key(subscription: i64, window_ms: i64, rule: &str) -> String {
    format!("s{subscription}:w{window_ms}:{rule}")
}

/// The window of a storm group's key.
pub(super) fn group_window(key: &str) -> Option<i64> {
    key.split(':').nth(1)?.strip_prefix('w')?.parse().ok()
}

/// What a group's next matches join.
enum Step<'a> {
    /// The group's newest delivery has not been sent and is not yet due: count into it.
    Grow(&'a DeliveryRow),
    /// A new delivery, due at this time: now when the group is quiet, else one window after the last one.
    New(i64),
}

fn storm_step(last: Option<&DeliveryRow>, window: i64, now: i64) -> Step<'_> {
    match last {
        None => Step::New(now),
        Some(d) if d.status == "pending" && d.attempts == 0 && d.next_at > now => Step::Grow(d),
        Some(d) => Step::New(now.max(d.next_at.saturating_add(window))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status: &str, attempts: i64, next_at: i64) -> DeliveryRow {
        DeliveryRow {
            id: 1,
            uid: "u".into(),
            channel_id: 1,
            subscription_id: Some(1),
            event: "audit.alert".into(),
            group_key: Some("s1:r".into()),
            payload: "{}".into(),
            match_count: 1,
            status: status.into(),
            attempts,
            next_at,
            deadline: i64::MAX,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            sent_at: None,
        }
    }

    #[test]
    fn group_keys_carry_their_window() {
        assert_eq!(group_window(&group_key(3, 60_000, "rm:root")), Some(60_000));
        assert_eq!(group_window("nonsense"), None);
    }

    #[test]
    fn a_storm_sends_the_first_match_now_and_counts_the_rest_into_one_per_window() {
        assert!(matches!(storm_step(None, 60_000, 1_000), Step::New(1_000)));
        // The first was sent at 1 000: the next message waits for the window's end.
        let sent = delivery("sent", 1, 1_000);
        assert!(matches!(storm_step(Some(&sent), 60_000, 2_000), Step::New(61_000)));
        // That one is waiting: later matches are counted into it.
        let waiting = delivery("pending", 0, 61_000);
        assert!(matches!(storm_step(Some(&waiting), 60_000, 3_000), Step::Grow(_)));
        // Due now (being sent): a new one, a window later.
        assert!(matches!(storm_step(Some(&waiting), 60_000, 61_000), Step::New(121_000)));
        // A quiet group long after: at once.
        assert!(matches!(storm_step(Some(&sent), 60_000, 500_000), Step::New(500_000)));
    }
}
