//! Who may do what, and who did, as stored: the grants upgrade on a database of the version before it, the
//! activity log's chain under writers that race (two stores on each real database), and an approval decided once
//! when two servers decide it at the same moment.

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
            node: "test-node",
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
