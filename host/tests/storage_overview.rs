//! The home page's counts (`store/overview.rs`) on SQLite, MariaDB and PostgreSQL: the same buckets and order
//! from the three dialects (the SQL groups by `t - t % width`, by position).

mod common;

use common::scratch::{on_each_dialect, CONNECT_LIMIT};
use omserver::store::{now_ms, NewJob, Store};

const DAY_MS: i64 = 86_400_000;

fn job(created_by: &str) -> NewJob<'_> {
    NewJob {
        module_id: 1003,
        module_version: "1.0.0",
        backend: "local",
        params: "{}",
        hosts: "[\"localhost\"]",
        created_by,
        rollout: None,
        rerun_of: None,
        template_id: None,
        definition: None,
    }
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
        store.insert_job(&job("carol")).await.unwrap();
        store.finish_job(failed, "failed", Some("1 of 1 hosts did not succeed"), &[]).await.unwrap();
        store.finish_job(succeeded, "succeeded", None, &[]).await.unwrap();
        let now = now_ms();
        let today = now - now % DAY_MS;
        let counts = store.jobs_per_day(today - 13 * DAY_MS).await.unwrap();
        let expected =
            [(today, "failed".to_owned(), 1), (today, "queued".to_owned(), 1), (today, "succeeded".to_owned(), 1)];
        // A job created a moment before midnight UTC lands on the day before: both days are right then.
        if counts.first().map(|c| c.0) == Some(today) {
            assert_eq!(counts, expected, "{dialect:?}");
        } else {
            assert_eq!(counts.iter().map(|c| c.2).sum::<i64>(), 3, "{dialect:?}: {counts:?}");
        }
        assert!(store.jobs_per_day(now + DAY_MS).await.unwrap().is_empty(), "{dialect:?}: nothing after now");
        assert!(store.audit_per_hour(now - DAY_MS).await.unwrap().is_empty(), "{dialect:?}");
        assert!(store.newest_audit_per_host().await.unwrap().is_empty(), "{dialect:?}");
        store.close().await;
    })
    .await;
}
