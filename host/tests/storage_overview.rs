//! The home page's counts (`store/overview.rs`) on SQLite, MariaDB and PostgreSQL: the same buckets and order
//! from the three dialects, kept as jobs end and audit batches are written, and filled in by migration 0013 for
//! what was stored before it.

mod common;

use common::scratch::{on_each_dialect, CONNECT_LIMIT};
use omserver::store::{now_ms, AuditRow, Dialect, NewHost, NewJob, Store, StoreError};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

fn audit_row(host_id: i64, chain_seq: i64, received_at: i64) -> AuditRow {
    AuditRow {
        id: 0,
        host_id,
        history_ip: "10.0.0.1".into(),
        history_id: chain_seq,
        history_user: "root".into(),
        login_user: None,
        tty: None,
        history_datetime: "2026-12-02 10:00:00".into(),
        received_at,
        history_command: "uptime".into(),
        source: "agent".into(),
        stream: Some("s".into()),
        seq: Some(chain_seq),
        chain_seq,
        row_hash: "0".repeat(64),
        ..AuditRow::default()
    }
}

fn new_host(name: &str, ip: &str) -> NewHost {
    common::scratch::plain_host(name, ip)
}

fn job(created_by: &str) -> NewJob<'_> {
    NewJob { params: "{}", hosts: "[\"localhost\"]", ..common::scratch::plain_job(created_by) }
}

#[tokio::test]
async fn jobs_are_counted_by_utc_day_and_status_and_audit_counts_run_on_every_dialect() {
    on_each_dialect(|dialect, url| async move {
        let store = tokio::time::timeout(CONNECT_LIMIT * 3, Store::connect(&url))
            .await
            .unwrap_or_else(|_| panic!("Store::connect({url}) did not finish"))
            .unwrap_or_else(|e| panic!("Store::connect({url}): {e}"));
        let failed = store.insert_job(&job("alice")).await.unwrap();
        let succeeded = store.insert_job(&job("bob")).await.unwrap();
        let carol = store.insert_job(&job("carol")).await.unwrap();
        // A job that waited for approval and was rejected is counted as it ends, like any other.
        let rejected = store.insert_job(&NewJob { pending_approval: true, ..job("dave") }).await.unwrap();
        store.finish_job(rejected, "rejected", Some("rejected by erin"), &[]).await.unwrap();
        store.finish_job(failed, "failed", Some("1 of 1 hosts did not succeed"), &[]).await.unwrap();
        store.finish_job(succeeded, "succeeded", None, &[]).await.unwrap();
        // Ending a job that has ended already is refused, and counts nothing.
        let again = store.finish_job(succeeded, "succeeded", None, &[]).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let now = now_ms();
        let today = now - now % DAY_MS;
        let counts = store.jobs_per_day(today - 13 * DAY_MS).await.unwrap();
        let expected = [
            (today, "failed".to_owned(), 1),
            (today, "queued".to_owned(), 1),
            (today, "rejected".to_owned(), 1),
            (today, "succeeded".to_owned(), 1),
        ];
        // A job created a moment before midnight UTC lands on the day before: both days are right then.
        if counts.first().map(|c| c.0) == Some(today) {
            assert_eq!(counts, expected, "{dialect:?}");
        } else {
            assert_eq!(counts.iter().map(|c| c.2).sum::<i64>(), 4, "{dialect:?}: {counts:?}");
        }
        assert!(store.jobs_per_day(now + DAY_MS).await.unwrap().is_empty(), "{dialect:?}: nothing after now");
        assert!(store.audit_per_hour(now - DAY_MS).await.unwrap().is_empty(), "{dialect:?}");
        assert!(store.newest_audit_per_host().await.unwrap().is_empty(), "{dialect:?}");

        // Audit rows: two hours ago (twice) and now on one host, three hours ago on another, none on a third.
        let busy = store.add_host(&new_host("busy", "10.0.0.1")).await.unwrap().id;
        let quiet = store.add_host(&new_host("quiet", "10.0.0.2")).await.unwrap().id;
        store.add_host(&new_host("never", "10.0.0.3")).await.unwrap();
        let hour = now - now % HOUR_MS;
        let rows = [
            audit_row(busy, 1, hour - 2 * HOUR_MS + 10),
            audit_row(busy, 2, hour - 2 * HOUR_MS + 20),
            audit_row(busy, 3, now),
            audit_row(quiet, 1, hour - 3 * HOUR_MS + 5),
        ];
        let heads = [(busy, 3, "0".repeat(64)), (quiet, 1, "0".repeat(64))];
        // Through the audit writer's own sink: a connection of its own on SQLite, the pool elsewhere.
        let mut sink = store.audit_sink().unwrap();
        tokio::task::spawn_blocking(move || sink.write_audit_batch(&rows, &[], &heads).map(|_| ()))
            .await
            .unwrap()
            .unwrap();
        let per_hour = store.audit_per_hour(hour - 2 * HOUR_MS).await.unwrap();
        assert_eq!(per_hour, [(hour - 2 * HOUR_MS, 2), (hour, 1)], "{dialect:?}");
        let mut newest = store.newest_audit_per_host().await.unwrap();
        newest.sort();
        assert_eq!(
            newest,
            [(busy, now), (quiet, hour - 3 * HOUR_MS + 5)],
            "{dialect:?}: hosts without events left out"
        );

        // Start-up fails the job a previous process left running, and counts it as failed. (A queued one would go
        // back to the queue on PostgreSQL, for any server: `storage_jobs.rs`.)
        store.mark_job_running(carol, "test-node").await.unwrap();
        assert_eq!(store.fail_unfinished_jobs("test-node", true, "interrupted").await.unwrap(), [carol]);
        let statuses: Vec<(String, i64)> =
            store.jobs_per_day(today - DAY_MS).await.unwrap().into_iter().map(|(_, s, n)| (s, n)).collect();
        let failed: i64 = statuses.iter().filter(|(s, _)| s == "failed").map(|(_, n)| n).sum();
        assert_eq!((failed, statuses.iter().map(|(_, n)| n).sum::<i64>()), (2, 4), "{dialect:?}: {statuses:?}");
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn migration_0013_counts_what_was_stored_before_it() {
    // Two days ago at 10:00 UTC: two failed jobs, one that succeeded and one still running; audit rows at 10:xx
    // (two) and 11:xx (one) that day.
    let now = now_ms();
    let day = now - now % DAY_MS - 2 * DAY_MS;
    let ten = day + 10 * HOUR_MS;
    let statements = vec![
        "INSERT INTO server_list (server_name, server_lip, created_at) VALUES ('old', '10.0.0.9', 0)".to_owned(),
        format!(
            "INSERT INTO jobs (module_id, module_version, backend, params, hosts, status, created_by, created_at) \
             VALUES (1003, '1.0.0', 'local', '{{}}', '[]', 'failed', 'a', {ten}), \
             (1003, '1.0.0', 'local', '{{}}', '[]', 'failed', 'a', {}), \
             (1003, '1.0.0', 'local', '{{}}', '[]', 'succeeded', 'a', {ten}), \
             (1003, '1.0.0', 'local', '{{}}', '[]', 'running', 'a', {ten})",
            ten + 1
        ),
        format!(
            "INSERT INTO server_history (host_id, history_ip, history_id, history_user, history_datetime, \
             received_at, history_command, source, chain_seq, row_hash) \
             SELECT id, '10.0.0.9', 1, 'root', '2026-12-01 10:00:00', {ten}, 'ls', 'agent', 1, 'x' FROM server_list \
             UNION ALL SELECT id, '10.0.0.9', 2, 'root', '2026-12-01 10:00:00', {}, 'ls', 'agent', 2, 'x' \
             FROM server_list \
             UNION ALL SELECT id, '10.0.0.9', 3, 'root', '2026-12-01 10:00:00', {}, 'ls', 'agent', 3, 'x' \
             FROM server_list",
            ten + 5,
            ten + HOUR_MS
        ),
    ];
    on_each_dialect(|dialect, url| {
        let statements = statements.clone();
        async move {
            // The database as migration 0012 left it, with rows written then.
            macro_rules! before_counts {
                ($migrator:expr, $pool:ty, $url:expr) => {{
                    let full = $migrator;
                    let old = sqlx::migrate::Migrator {
                        migrations: std::borrow::Cow::Owned(full.migrations[..12].to_vec()),
                        ..full
                    };
                    let pool = <$pool>::connect($url).await.unwrap();
                    old.run(&pool).await.unwrap();
                    for statement in &statements {
                        sqlx::query(statement).execute(&pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
                    }
                    pool.close().await;
                }};
            }
            match dialect {
                Dialect::Sqlite => {
                    before_counts!(sqlx::migrate!("../migrations/sqlite"), sqlx::SqlitePool, &format!("{url}?mode=rwc"))
                }
                Dialect::MySql => before_counts!(sqlx::migrate!("../migrations/mysql"), sqlx::MySqlPool, &url),
                Dialect::Postgres => before_counts!(sqlx::migrate!("../migrations/postgres"), sqlx::PgPool, &url),
            }
            let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("migrating to 0013: {e}"));
            assert_eq!(
                store.jobs_per_day(day).await.unwrap(),
                [(day, "failed".to_owned(), 2), (day, "running".to_owned(), 1), (day, "succeeded".to_owned(), 1)],
                "{dialect:?}"
            );
            assert_eq!(store.audit_per_hour(day).await.unwrap(), [(ten, 2), (ten + HOUR_MS, 1)], "{dialect:?}");
            store.close().await;
        }
    })
    .await;
}
