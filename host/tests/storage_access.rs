//! Who may do what, and who did, as stored: the grants upgrade on a database of the version before it, the
//! activity log's chain under writers that race (two stores on each real database), an approval decided once
//! when two servers decide it at the same moment, and failed logins that two servers count at once.

mod common;

use common::scratch::on_each_dialect;
use omserver::store::Store;
use sqlx::Connection;

/// Users of a version before grants keep reaching everything: the upgrade gives each a grant on everything at its
/// own role. Migrations up to 0016, a user written as that version wrote it, then the server's start applies 0017.
#[tokio::test]
async fn the_grants_upgrade_gives_every_existing_user_its_role_on_everything() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    let mut before = sqlx::migrate::Migrator::new(path).await.unwrap();
    before.migrations = before.migrations.iter().filter(|m| m.version < 17).cloned().collect::<Vec<_>>().into();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    before.run(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO users (name, password_hash, role, created_at) VALUES ('old', 'x', 'operator', 1)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = Store::connect(&url).await.unwrap();
    let user = store.user_by_name(&omserver::store::UserName::parse("old").unwrap()).await.unwrap().unwrap();
    let grants = store.grants_of(user.id).await.unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!((grants[0].role.as_deref(), grants[0].spec.as_str()), (None, "{}"));
    assert!(grants[0].created_at > 1_700_000_000_000, "a time in ms: {}", grants[0].created_at);
    let scope = omserver::access::scope_of(&store, user.id, omserver::auth::Role::Operator).await.unwrap();
    assert!(scope.is_all(), "its role on everything, as before");
}

/// Two servers on one database append to the activity log at once: each append moves the head only from the hash it
/// read, so the chain stays one line, every record in it once.
#[tokio::test]
async fn concurrent_activity_appends_from_two_stores_keep_one_unbroken_chain() {
    use omserver::activity::{Activity, Actor, Change};
    on_each_dialect(|_, url| async move {
        let (one, other) = (Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap());
        let key = b"activity test key";
        let writers = [Activity::new(one.clone(), key), Activity::new(other.clone(), key)];
        let mut tasks = Vec::new();
        for (w, writer) in writers.into_iter().enumerate() {
            for i in 0..15 {
                let writer = writer.clone();
                tasks.push(tokio::spawn(async move {
                    let change = Change::ok("user.add", format!("user w{w}-{i}"));
                    writer.record(&Actor::internal("test"), change).await;
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let report = omserver::activity::verify(&one, key).await.unwrap();
        assert_eq!((report.rows, report.problems.len()), (30, 0), "{:?}", report.problems);
        one.close().await;
        other.close().await;
    })
    .await;
}

/// Two servers decide one waiting job at once (an approval against the expiry sweep, say): one decision wins, the
/// job is queued only when it is the approval, and a decided approval is no longer found past its time.
#[tokio::test]
async fn a_waiting_job_is_decided_once_when_two_stores_race() {
    on_each_dialect(|_, url| async move {
        let (one, other) = (Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap());
        let policy = one.insert_policy("db changes", r#"{"modules":[1003]}"#, 60, false, "admin").await.unwrap();
        let job = omserver::store::NewJob {
            module_id: 1003,
            module_version: "1.0.0",
            backend: "local",
            params: "{}",
            hosts: r#"["localhost"]"#,
            created_by: "alice",
            rollout: None,
            rerun_of: None,
            template_id: None,
            definition: None,
            pending_approval: true,
            node: Some("test-node"),
            module_sha256: "0",
        };
        for round in 0..10 {
            let id = one.insert_job(&job).await.unwrap();
            one.insert_approval(id, &policy, "alice", 1).await.unwrap();
            assert_eq!(one.expired_approvals(2).await.unwrap().last(), Some(&id), "past its time, still open");
            let (a, b) = tokio::join!(
                one.decide_approval(id, "approved", "bob", "ok"),
                other.decide_approval(id, "expired", "server", "")
            );
            let (approved, expired) = (a.unwrap(), b.unwrap());
            assert!(approved ^ expired, "round {round}: decided once, not {approved} and {expired}");
            let status = one.job(id).await.unwrap().unwrap().status;
            assert_eq!(status, if approved { "queued" } else { "pending_approval" }, "round {round}");
            let row = one.approval(id).await.unwrap().unwrap();
            assert_eq!(row.decision.as_deref(), Some(if approved { "approved" } else { "expired" }));
            assert!(!one.expired_approvals(2).await.unwrap().contains(&id), "a decided one is not swept again");
        }
        assert!(one.delete_policy(policy.id).await.unwrap());
        assert!(!one.delete_policy(policy.id).await.unwrap());
        one.close().await;
        other.close().await;
    })
    .await;
}

/// Two servers count failed logins of one name from one address at once, each also a name of its own: every
/// failure is counted, none lost to the other's write, and the newest failure's time is kept. Then a count past
/// its forgetting starts again at 1, and the sweep deletes what was forgotten.
#[tokio::test]
async fn failed_logins_counted_at_once_by_two_stores_are_all_counted() {
    on_each_dialect(|_, url| async move {
        let (one, other) = (Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap());
        // Subjects as the throttle makes them: 64 hex digits.
        let subject = |name: &str| format!("{:0>64}", hex::encode(name));
        let (name, address) = (subject("alice"), subject("192.0.2.7"));
        let now = omserver::store::now_ms();
        let forgotten_before = now - 15 * 60 * 1000;
        let mut tasks = Vec::new();
        for (s, store) in [one.clone(), other.clone()].into_iter().enumerate() {
            for i in 0..20 {
                let (store, name, address, own) =
                    (store.clone(), name.clone(), address.clone(), subject(&format!("{s}-{i}")));
                tasks.push(tokio::spawn(async move {
                    store.count_login_failure(&[&name, &address, &own], now + i, forgotten_before).await
                }));
            }
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let counts = |rows: Vec<omserver::store::FailureRow>| {
            let mut counts: Vec<(String, i64, i64)> =
                rows.into_iter().map(|r| (r.subject, r.failures, r.last_failed_at)).collect();
            counts.sort();
            counts
        };
        let rows = other.login_failures(&[&name, &address, &subject("0-3"), &subject("nobody")]).await.unwrap();
        let mut want =
            vec![(name.clone(), 40, now + 19), (address.clone(), 40, now + 19), (subject("0-3"), 1, now + 3)];
        want.sort();
        assert_eq!(counts(rows), want);

        // 15 minutes and a bit later: the name's count starts again; the sweep deletes the rest.
        let later = now + 15 * 60 * 1000 + 20;
        one.count_login_failure(&[&name], later, later - 15 * 60 * 1000).await.unwrap();
        assert_eq!(other.delete_login_failures_before(later - 15 * 60 * 1000).await.unwrap(), 41);
        assert_eq!(counts(one.login_failures(&[&name, &address]).await.unwrap()), [(name.clone(), 1, later)]);
        one.forget_login_failures(&name).await.unwrap();
        assert!(one.login_failures(&[&name]).await.unwrap().is_empty());
        one.close().await;
        other.close().await;
    })
    .await;
}
