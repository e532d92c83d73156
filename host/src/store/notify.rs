//! Notification channels, subscriptions, the outbox of facts (`notify_events`), deliveries and their attempts.
//! What the rows mean is `crate::notify`'s business; this module reads and writes them, and gives other tables'
//! writers the statement that records a fact in their own transaction ([`INSERT_EVENT`]).

use super::{fetch_bound, insert_id, now_ms, on_pool, Bind, Store, StoreError};

/// Records a fact for the notifier: `(kind, subject_id, detail, created_at)`. Run inside the transaction that
/// stores the fact, so that either both are kept or neither.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO notify_events (kind, subject_id, detail, created_at) VALUES (?, ?, ?, ?)";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    /// JSON of the channel's settings without its secret.
    pub config: String,
    /// The webhook's signing secret or the SMTP password: never shown after creation.
    pub secret: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub id: i64,
    pub channel_id: i64,
    pub event: String,
    /// JSON object; `{}` for none.
    pub filter: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A fact waiting to become deliveries.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    /// The job or schedule the fact is about.
    pub subject_id: Option<i64>,
    /// JSON, for facts that are not rows of their own (a fire's slot, a rejected file, a backend's state).
    pub detail: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    /// The idempotency id sent with every attempt: a receiver that sees it twice has seen the same notification.
    pub uid: String,
    pub channel_id: i64,
    pub subscription_id: Option<i64>,
    pub event: String,
    /// Deliveries of one storm share it (an alert rule of a subscription): matches are counted into one.
    pub group_key: Option<String>,
    /// JSON of what happened (`crate::notify::Notice`).
    pub payload: String,
    /// How many matches this delivery reports (1 but for grouped alerts).
    pub match_count: i64,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_at: i64,
    /// After this, no more attempts: the delivery fails.
    pub deadline: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptRow {
    pub attempt: i64,
    pub at: i64,
    /// 1 when the receiver took it.
    #[serde(serialize_with = "as_bool")]
    #[schema(value_type = bool)]
    pub ok: i64,
    /// The receiver's answer (status and the start of its body) or the error.
    pub answer: String,
}

fn as_bool<S: serde::Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(*value != 0)
}

/// A delivery to create.
pub struct NewDelivery {
    pub uid: String,
    pub channel_id: i64,
    pub subscription_id: Option<i64>,
    pub event: String,
    pub group_key: Option<String>,
    pub payload: String,
    /// How many matches it reports.
    pub count: i64,
    /// When the first attempt is due (now, or the end of a storm's window).
    pub next_at: i64,
    pub deadline: i64,
    /// Why it fails without an attempt (the channel's outbox is full); it is stored as failed.
    pub dropped: Option<String>,
}

/// How an attempt ended, as stored.
pub enum AttemptOutcome {
    Sent,
    /// Try again at this time.
    Retry(i64),
    Failed,
}

/// Filters for the delivery log, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub status: Option<String>,
    pub channel_id: Option<i64>,
    pub event: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

const DELIVERY_COLUMNS: &str = "id, uid, channel_id, subscription_id, event, group_key, payload, match_count, \
                                status, attempts, next_at, deadline, last_error, created_at, updated_at, sent_at";

const INSERT_DELIVERY: &str = "INSERT INTO notify_deliveries (uid, channel_id, subscription_id, event, group_key, \
                               payload, match_count, status, last_error, attempts, next_at, deadline, created_at, \
                               updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)";

/// Inserts deliveries inside a transaction of whichever dialect `on_pool!` picked.
macro_rules! insert_deliveries {
    ($tx:ident, $sql:ident, $deliveries:expr, $now:expr) => {
        for d in $deliveries {
            sqlx::query(&$sql)
                .bind(&d.uid)
                .bind(d.channel_id)
                .bind(d.subscription_id)
                .bind(&d.event)
                .bind(&d.group_key)
                .bind(&d.payload)
                .bind(d.count)
                .bind(if d.dropped.is_some() { "failed" } else { "pending" })
                .bind(&d.dropped)
                .bind(d.next_at)
                .bind(d.deadline)
                .bind($now)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

impl Store {
    pub async fn notify_channels(&self) -> Result<Vec<ChannelRow>, StoreError> {
        let sql = "SELECT id, name, kind, config, secret, created_by, created_at FROM notify_channels ORDER BY name";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ChannelRow>(sql).fetch_all(pool).await)?)
    }

    pub async fn notify_channel(&self, id: i64) -> Result<Option<ChannelRow>, StoreError> {
        let sql =
            self.sql("SELECT id, name, kind, config, secret, created_by, created_at FROM notify_channels WHERE id = ?");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ChannelRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    pub async fn add_notify_channel(
        &self,
        name: &str,
        kind: &str,
        config: &str,
        secret: Option<&str>,
        by: &str,
    ) -> Result<i64, StoreError> {
        insert_id!(
            self,
            "INSERT INTO notify_channels (name, kind, config, secret, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            name,
            kind,
            config,
            secret,
            by,
            now_ms()
        )
        .map_err(|e| StoreError::conflict_or(e, || format!("a channel named {name} exists")))
    }

    /// Deletes a channel with its subscriptions and deliveries (and their attempts).
    pub async fn delete_notify_channel(&self, id: i64) -> Result<bool, StoreError> {
        let attempts = self.sql(
            "DELETE FROM notify_attempts WHERE delivery_id IN (SELECT id FROM notify_deliveries WHERE channel_id = ?)",
        );
        let deliveries = self.sql("DELETE FROM notify_deliveries WHERE channel_id = ?");
        let subscriptions = self.sql("DELETE FROM notify_subscriptions WHERE channel_id = ?");
        let channel = self.sql("DELETE FROM notify_channels WHERE id = ?");
        let done = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            for sql in [&attempts, &deliveries, &subscriptions] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
            let done = sqlx::query(&channel).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await)?;
        Ok(done > 0)
    }

    pub async fn notify_subscriptions(&self) -> Result<Vec<SubscriptionRow>, StoreError> {
        let sql = "SELECT id, channel_id, event, filter, created_by, created_at FROM notify_subscriptions ORDER BY id";
        Ok(on_pool!(self, pool => sqlx::query_as::<_, SubscriptionRow>(sql).fetch_all(pool).await)?)
    }

    pub async fn add_notify_subscription(
        &self,
        channel_id: i64,
        event: &str,
        filter: &str,
        by: &str,
    ) -> Result<i64, StoreError> {
        Ok(insert_id!(
            self,
            "INSERT INTO notify_subscriptions (channel_id, event, filter, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?)",
            channel_id,
            event,
            filter,
            by,
            now_ms()
        )?)
    }

    pub async fn delete_notify_subscription(&self, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM notify_subscriptions WHERE id = ?");
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Records a fact that has no row of its own elsewhere (a rejected module file, an unhealthy backend).
    pub async fn record_notify_event(
        &self,
        kind: &str,
        subject_id: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = self.sql(INSERT_EVENT);
        on_pool!(self, pool => sqlx::query(&sql).bind(kind).bind(subject_id).bind(detail).bind(now_ms())
            .execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// The oldest facts not yet turned into deliveries.
    pub async fn pending_notify_events(&self, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let sql = self.sql("SELECT id, kind, subject_id, detail, created_at FROM notify_events ORDER BY id LIMIT ?");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, EventRow>(&sql).bind(limit).fetch_all(pool).await)?)
    }

    /// Replaces a fact by its deliveries, in one transaction: a crash leaves either the fact or the deliveries.
    pub async fn expand_notify_event(&self, event_id: i64, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let insert = self.sql(INSERT_DELIVERY);
        let delete = self.sql("DELETE FROM notify_events WHERE id = ?");
        let now = now_ms();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            insert_deliveries!(tx, insert, deliveries, now);
            sqlx::query(&delete).bind(event_id).execute(&mut *tx).await?;
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// Stores deliveries made outside an event (a test message).
    pub async fn insert_deliveries(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let insert = self.sql(INSERT_DELIVERY);
        let now = now_ms();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            insert_deliveries!(tx, insert, deliveries, now);
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    pub async fn delivery_by_uid(&self, uid: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let query = format!("SELECT {DELIVERY_COLUMNS} FROM notify_deliveries WHERE uid = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, DeliveryRow>(&sql).bind(uid).fetch_optional(pool).await)?)
    }

    /// Where the notifier stopped reading a stream (the audit log's ids).
    pub async fn notify_cursor(&self, name: &str) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT position FROM notify_cursors WHERE name = ?");
        let found = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(&sql).bind(name).fetch_optional(pool).await)?;
        Ok(found.unwrap_or(0))
    }

    /// Stores alert deliveries (new ones, and counts added to open groups) and moves the cursor past the rows they
    /// came from, in one transaction: after a crash the rows are read again from the cursor, and counted once.
    pub async fn record_alert_deliveries(
        &self,
        cursor: (&str, i64),
        new: &[NewDelivery],
        grown: &[(i64, i64, String)],
    ) -> Result<(), StoreError> {
        let insert = self.sql(INSERT_DELIVERY);
        let grow = self.sql(
            "UPDATE notify_deliveries SET match_count = match_count + ?, payload = ?, updated_at = ? \
             WHERE id = ? AND status = 'pending' AND attempts = 0",
        );
        let update_cursor = self.sql("UPDATE notify_cursors SET position = ? WHERE name = ?");
        let insert_cursor = self.sql("INSERT INTO notify_cursors (name, position) VALUES (?, ?)");
        let now = now_ms();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            insert_deliveries!(tx, insert, new, now);
            for (id, added, payload) in grown {
                sqlx::query(&grow).bind(*added).bind(payload).bind(now).bind(*id).execute(&mut *tx).await?;
            }
            let moved = sqlx::query(&update_cursor).bind(cursor.1).bind(cursor.0).execute(&mut *tx).await?;
            if moved.rows_affected() == 0 {
                sqlx::query(&insert_cursor).bind(cursor.0).bind(cursor.1).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// The newest delivery of a storm group, if any.
    pub async fn last_in_group(&self, group_key: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let query =
            format!("SELECT {DELIVERY_COLUMNS} FROM notify_deliveries WHERE group_key = ? ORDER BY id DESC LIMIT 1");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, DeliveryRow>(&sql).bind(group_key).fetch_optional(pool).await)?)
    }

    /// When a storm group last had a delivery sent.
    pub async fn last_sent_in_group(&self, group_key: &str) -> Result<Option<i64>, StoreError> {
        let sql = self.sql("SELECT MAX(sent_at) FROM notify_deliveries WHERE group_key = ? AND status = 'sent'");
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, Option<i64>>(&sql).bind(group_key).fetch_one(pool).await)?)
    }

    /// Takes a due delivery for one attempt (`sending`), so that no storm match is counted into it while it is
    /// sent; answers the row as claimed, or `None` when it is no longer pending.
    pub async fn claim_delivery(&self, id: i64) -> Result<Option<DeliveryRow>, StoreError> {
        let sql = self.sql("UPDATE notify_deliveries SET status = 'sending' WHERE id = ? AND status = 'pending'");
        let claimed =
            on_pool!(self, pool => sqlx::query(&sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if claimed == 0 {
            return Ok(None);
        }
        self.delivery(id).await
    }

    /// Deliveries a stopped process was sending: pending again (sent again with the same uid: at least once).
    pub async fn release_sending(&self) -> Result<u64, StoreError> {
        let sql = "UPDATE notify_deliveries SET status = 'pending' WHERE status = 'sending'";
        Ok(on_pool!(self, pool => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()))?)
    }

    /// Moves a pending delivery's next attempt to `at`.
    pub async fn postpone_delivery(&self, id: i64, at: i64) -> Result<(), StoreError> {
        let sql =
            self.sql("UPDATE notify_deliveries SET next_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'");
        on_pool!(self, pool => sqlx::query(&sql).bind(at).bind(now_ms()).bind(id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Pending deliveries due at `now`, the longest waiting first.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        let query = format!(
            "SELECT {DELIVERY_COLUMNS} FROM notify_deliveries WHERE status = 'pending' AND next_at <= ? \
             ORDER BY next_at, id LIMIT ?"
        );
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, DeliveryRow>(&sql).bind(now).bind(limit).fetch_all(pool).await)?)
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>, StoreError> {
        let query = format!("SELECT {DELIVERY_COLUMNS} FROM notify_deliveries WHERE id = ?");
        let sql = self.sql(&query);
        Ok(on_pool!(self, pool => sqlx::query_as::<_, DeliveryRow>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    pub async fn query_deliveries(&self, filter: &DeliveryQuery) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(status) = &filter.status {
            clauses.push("status = ?".to_owned());
            binds.push(Bind::Text(status.clone()));
        }
        if let Some(channel) = filter.channel_id {
            clauses.push("channel_id = ?".to_owned());
            binds.push(Bind::Int(channel));
        }
        if let Some(event) = &filter.event {
            clauses.push("event = ?".to_owned());
            binds.push(Bind::Text(event.clone()));
        }
        if let Some(before) = filter.before {
            clauses.push("id < ?".to_owned());
            binds.push(Bind::Int(before));
        }
        let filter_sql = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let query = format!("SELECT {DELIVERY_COLUMNS} FROM notify_deliveries{filter_sql} ORDER BY id DESC LIMIT ?");
        binds.push(Bind::Int(filter.limit));
        let sql = self.sql(&query);
        Ok(fetch_bound!(self, DeliveryRow, &sql, &binds)?)
    }

    pub async fn delivery_attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRow>, StoreError> {
        let sql =
            self.sql("SELECT attempt, at, ok, answer FROM notify_attempts WHERE delivery_id = ? ORDER BY attempt");
        Ok(on_pool!(self, pool => sqlx::query_as::<_, AttemptRow>(&sql).bind(delivery_id).fetch_all(pool).await)?)
    }

    /// Logs an attempt and moves the delivery on (sent, due again later, or failed), in one transaction.
    pub async fn record_attempt(
        &self,
        delivery: &DeliveryRow,
        ok: bool,
        answer: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let attempt = delivery.attempts + 1;
        let log = self.sql("INSERT INTO notify_attempts (delivery_id, attempt, at, ok, answer) VALUES (?, ?, ?, ?, ?)");
        let (status, next_at, sent_at) = match outcome {
            AttemptOutcome::Sent => ("sent", delivery.next_at, Some(now)),
            AttemptOutcome::Retry(at) => ("pending", at, None),
            AttemptOutcome::Failed => ("failed", delivery.next_at, None),
        };
        let last_error = if ok { None } else { Some(answer) };
        let update = self.sql(
            "UPDATE notify_deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?, sent_at = ?, \
             updated_at = ? WHERE id = ?",
        );
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&log).bind(delivery.id).bind(attempt).bind(now).bind(i64::from(ok)).bind(answer)
                .execute(&mut *tx).await?;
            sqlx::query(&update)
                .bind(status)
                .bind(attempt)
                .bind(next_at)
                .bind(last_error)
                .bind(sent_at)
                .bind(now)
                .bind(delivery.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// Makes a delivery due now again, with a fresh deadline; its attempts are kept and counted on.
    pub async fn resend_delivery(&self, id: i64, deadline: i64) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE notify_deliveries SET status = 'pending', next_at = ?, deadline = ?, updated_at = ? WHERE id = ?",
        );
        let now = now_ms();
        let done = on_pool!(self, pool => sqlx::query(&sql).bind(now).bind(deadline).bind(now).bind(id)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Fails a delivery without an attempt (its channel is gone, or the outbox is full).
    pub async fn drop_delivery(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        let sql =
            self.sql("UPDATE notify_deliveries SET status = 'failed', last_error = ?, updated_at = ? WHERE id = ?");
        on_pool!(self, pool => sqlx::query(&sql).bind(reason).bind(now_ms()).bind(id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// How many deliveries of a channel wait to be sent.
    pub async fn pending_deliveries(&self, channel_id: i64) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT COUNT(*) FROM notify_deliveries WHERE channel_id = ? AND status = 'pending'");
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(&sql).bind(channel_id).fetch_one(pool).await)?)
    }

    /// Deletes sent and failed deliveries (with their attempts) last changed before `before`.
    pub async fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        let attempts = self.sql(
            "DELETE FROM notify_attempts WHERE delivery_id IN (SELECT id FROM notify_deliveries \
             WHERE status IN ('sent', 'failed') AND updated_at < ?)",
        );
        let deliveries =
            self.sql("DELETE FROM notify_deliveries WHERE status IN ('sent', 'failed') AND updated_at < ?");
        let done = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&attempts).bind(before).execute(&mut *tx).await?;
            let done = sqlx::query(&deliveries).bind(before).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await)?;
        Ok(done)
    }
}
