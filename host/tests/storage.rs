//! The [`Store`] against real databases: every check runs on SQLite (a temporary file), MariaDB/MySQL and
//! PostgreSQL, each time in a fresh database of its own that is dropped afterwards.
//!
//! The servers must be running; an unreachable one fails the test (it is never skipped). Admin URLs come from
//! `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`) and `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the account must be allowed to create and drop databases.

use omserver::store::{now_ms, Dialect, HostRow, JobQuery, NewHost, Store, StoreError, TokenScope, UserName};
use sqlx::Connection;

mod common;

use common::scratch::{for_each_dialect, on_each_dialect, with_database, Db};

/// Opens a plain connection to `db` (not through the store) and evaluates `$body` with `$conn` bound to it.
macro_rules! on_conn {
    ($db:expr, $conn:ident => $body:expr) => {
        match $db.dialect {
            Dialect::Sqlite => {
                let mut $conn = sqlx::SqliteConnection::connect(&$db.url).await.expect("plain SQLite connection");
                let out = $body;
                let _ = $conn.close().await;
                out
            }
            Dialect::MySql => {
                let mut $conn = sqlx::MySqlConnection::connect(&$db.url).await.expect("plain MySQL connection");
                let out = $body;
                let _ = $conn.close().await;
                out
            }
            Dialect::Postgres => {
                let mut $conn = sqlx::PgConnection::connect(&$db.url).await.expect("plain PostgreSQL connection");
                let out = $body;
                let _ = $conn.close().await;
                out
            }
        }
    };
}

/// The integers a query without parameters returns, in order.
async fn integers(db: &Db, sql: &str) -> Vec<Option<i64>> {
    on_conn!(db, conn => sqlx::query_scalar::<_, Option<i64>>(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}")))
}

async fn count(db: &Db, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    integers(db, &sql).await[0].expect("COUNT(*) is never NULL")
}

/// The names of the tables in `db`, sorted.
async fn tables(db: &Db) -> Vec<String> {
    let sql = match db.dialect {
        Dialect::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        Dialect::MySql => {
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE()"
        }
        Dialect::Postgres => "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
    };
    let mut names =
        on_conn!(db, conn => sqlx::query_scalar::<_, String>(sql).fetch_all(&mut conn).await.expect("list tables"));
    names.sort();
    names
}

/// How many migrations each dialect has (`migrations/<dialect>/`), and their versions.
const MIGRATIONS: i64 = 23;

fn versions() -> Vec<Option<i64>> {
    (1..=MIGRATIONS).map(Some).collect()
}

const TABLES: [&str; 37] = [
    "_sqlx_migrations",
    "activity",
    "activity_head",
    "api_tokens",
    "approval_policies",
    "audit_alert_rules",
    "audit_archived",
    "audit_chain",
    "audit_gaps",
    "audit_hours",
    "audit_restores",
    "cluster_modules",
    "cluster_nodes",
    "host_tags",
    "job_approvals",
    "job_batches",
    "job_days",
    "job_progress",
    "job_results",
    "job_templates",
    "jobs",
    "login_throttle",
    "notify_attempts",
    "notify_channels",
    "notify_cursors",
    "notify_deliveries",
    "notify_events",
    "notify_subscriptions",
    "schedule_fires",
    "schedules",
    "server_app_categ",
    "server_fun_categ",
    "server_history",
    "server_list",
    "sessions",
    "user_grants",
    "users",
];

/// [`TABLES`], and the command index with how far its keeper has come: on SQLite (migration 0014) an FTS5 table
/// and the tables FTS5 keeps its index in, on PostgreSQL (0016) a table of words.
fn expected_tables(dialect: Dialect) -> Vec<&'static str> {
    let mut tables = TABLES.to_vec();
    if dialect == Dialect::Postgres {
        tables.extend(["audit_text_position", "server_history_text"]);
        tables.sort();
    }
    if dialect == Dialect::Sqlite {
        tables.extend([
            "audit_text_position",
            "server_history_text",
            "server_history_text_config",
            "server_history_text_data",
            "server_history_text_docsize",
            "server_history_text_idx",
        ]);
        tables.sort();
    }
    tables
}

/// The URL spelled with the scheme's other accepted name (`mariadb:`, `postgresql:`), to check both connect.
fn alias_url(db: &Db) -> String {
    match db.dialect {
        Dialect::Sqlite => db.url.clone(),
        Dialect::MySql => db.url.replacen("mysql:", "mariadb:", 1),
        Dialect::Postgres => db.url.replacen("postgres:", "postgresql:", 1),
    }
}

fn host(name: &str, ip: &str) -> NewHost {
    common::scratch::plain_host(name, ip)
}

fn in_category(name: &str, ip: &str, function: &str, app: &str) -> NewHost {
    NewHost { category: Some((function.to_owned(), app.to_owned())), ..host(name, ip) }
}

/// A host row without its generated id and time, for exact comparison.
type HostFields = (String, String, Option<String>, Option<String>, Option<String>, Option<String>);

fn fields(row: &HostRow) -> HostFields {
    (row.name.clone(), row.ip.clone(), row.wan_ip.clone(), row.op.clone(), row.function.clone(), row.app.clone())
}

fn expected(name: &str, ip: &str, function: Option<&str>, app: Option<&str>) -> HostFields {
    (name.to_owned(), ip.to_owned(), None, None, function.map(str::to_owned), app.map(str::to_owned))
}

fn assert_conflict(result: Result<HostRow, StoreError>, message: &str) {
    match result {
        Err(StoreError::Conflict(got)) => assert_eq!(got, message),
        Err(other) => panic!("expected Conflict({message:?}), got the error {other:?}"),
        Ok(row) => panic!("expected Conflict({message:?}), got the row {row:?}"),
    }
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_are_a_no_op() {
    for_each_dialect(|db| async move {
        assert_eq!(tables(&db).await, expected_tables(db.dialect));
        let applied = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        assert_eq!(integers(&db, applied).await, versions());
        assert_eq!(db.store.host_count().await.unwrap(), 0);
        assert_eq!(db.store.token_count().await.unwrap(), 0);
        assert!(db.store.query_jobs(&JobQuery { limit: 10, ..JobQuery::default() }).await.unwrap().is_empty());
        db.store.ping().await.unwrap();

        let kept = db.store.add_host(&host("kept", "10.0.0.1")).await.unwrap();
        // Connecting again (through the scheme's other name, where it has one) finds nothing left to apply.
        let again = Store::connect(&alias_url(&db)).await.unwrap_or_else(|e| panic!("second connect: {e}"));
        assert_eq!(again.dialect(), db.dialect);
        assert_eq!(tables(&db).await, expected_tables(db.dialect));
        assert_eq!(integers(&db, applied).await, versions());
        assert_eq!(count(&db, "_sqlx_migrations").await, MIGRATIONS);
        let hosts = again.list_hosts().await.unwrap();
        assert_eq!(hosts.iter().map(|h| (h.id, h.name.as_str())).collect::<Vec<_>>(), [(kept.id, "kept")]);
        again.close().await;
    })
    .await;
}

#[tokio::test]
async fn hosts_with_and_without_categories() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let before = now_ms();
        let plain = store
            .add_host(&NewHost {
                wan_ip: Some("203.0.113.7".into()),
                op: Some("ops team".into()),
                ..host("plain", "10.0.0.1")
            })
            .await
            .unwrap();
        let after = now_ms();
        assert!(plain.id > 0);
        assert!((before..=after).contains(&plain.created_at), "{} not in {before}..={after}", plain.created_at);
        assert_eq!(
            fields(&plain),
            ("plain".into(), "10.0.0.1".into(), Some("203.0.113.7".into()), Some("ops team".into()), None, None)
        );
        assert_eq!((count(&db, "server_fun_categ").await, count(&db, "server_app_categ").await), (0, 0));

        let web1 = store.add_host(&in_category("web1", "10.0.0.2", "Linux.Web", "nginx")).await.unwrap();
        assert_eq!(fields(&web1), expected("web1", "10.0.0.2", Some("Linux.Web"), Some("nginx")));
        // The same categories again are reused, not created twice.
        let web2 = store.add_host(&in_category("web2", "10.0.0.3", "Linux.Web", "nginx")).await.unwrap();
        assert_eq!(fields(&web2), expected("web2", "10.0.0.3", Some("Linux.Web"), Some("nginx")));
        assert_eq!((count(&db, "server_fun_categ").await, count(&db, "server_app_categ").await), (1, 1));
        // The same app name under another function is another app category.
        let db1 = store.add_host(&in_category("db1", "10.0.0.4", "Linux.DB", "nginx")).await.unwrap();
        assert_eq!(fields(&db1), expected("db1", "10.0.0.4", Some("Linux.DB"), Some("nginx")));
        // Another app under an existing function reuses the function.
        let db2 = store.add_host(&in_category("db2", "10.0.0.5", "Linux.DB", "mysql")).await.unwrap();
        assert_eq!(fields(&db2), expected("db2", "10.0.0.5", Some("Linux.DB"), Some("mysql")));
        assert_eq!((count(&db, "server_fun_categ").await, count(&db, "server_app_categ").await), (2, 3));

        let app_ids = integers(&db, "SELECT server_app_id FROM server_list ORDER BY id").await;
        let [None, Some(w1), Some(w2), Some(d1), Some(d2)] = app_ids[..] else { panic!("app ids {app_ids:?}") };
        assert_eq!(w1, w2, "web1 and web2 share one app category");
        assert!(w1 != d1 && d1 != d2 && w1 != d2, "distinct app categories: {app_ids:?}");
        let fun_of_apps = integers(&db, "SELECT server_categ_id FROM server_app_categ ORDER BY id").await;
        assert_eq!(fun_of_apps.len(), 3);
        assert_ne!(fun_of_apps[0], fun_of_apps[1], "nginx under Linux.Web and under Linux.DB");
        assert_eq!(fun_of_apps[1], fun_of_apps[2], "nginx and mysql both under Linux.DB");

        // Listed by name, with the categories joined in.
        let listed: Vec<HostFields> = store.list_hosts().await.unwrap().iter().map(fields).collect();
        assert_eq!(
            listed,
            [
                expected("db1", "10.0.0.4", Some("Linux.DB"), Some("nginx")),
                expected("db2", "10.0.0.5", Some("Linux.DB"), Some("mysql")),
                fields(&plain),
                expected("web1", "10.0.0.2", Some("Linux.Web"), Some("nginx")),
                expected("web2", "10.0.0.3", Some("Linux.Web"), Some("nginx")),
            ]
        );
        assert_eq!(store.host_count().await.unwrap(), 5);

        // The longest name the column holds.
        let long = "n".repeat(255);
        assert_eq!(store.add_host(&host(&long, "10.0.0.6")).await.unwrap().name, long);
    })
    .await;
}

#[tokio::test]
async fn a_hosts_ssh_port_and_user_round_trip() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let custom = NewHost { port: Some(65535), user: Some("deploy".into()), ..host("custom", "10.0.0.31") };
        let row = store.add_host(&custom).await.unwrap();
        assert_eq!((row.port, row.user.as_deref()), (Some(65535), Some("deploy")));
        let plain = store.add_host(&host("plain", "10.0.0.32")).await.unwrap();
        assert_eq!((plain.port, plain.user), (None, None));
        let found = store.find_hosts(&["custom".to_owned()]).await.unwrap();
        assert_eq!((found[0].port, found[0].user.as_deref()), (Some(65535), Some("deploy")));
    })
    .await;
}

#[tokio::test]
async fn ipv6_addresses_up_to_45_characters_are_stored_as_given() {
    // The HTTP layer canonicalises addresses; the store keeps what it is given, up to the longest text form.
    const FULL: &str = "2001:0db8:85a3:0000:0000:8a2e:0370:7334";
    const LONGEST: &str = "0000:0000:0000:0000:0000:ffff:192.168.100.228";
    assert_eq!((FULL.len(), LONGEST.len()), (39, 45));
    for_each_dialect(|db| async move {
        let store = &db.store;
        let full = store.add_host(&NewHost { wan_ip: Some(LONGEST.into()), ..host("v6-full", FULL) }).await.unwrap();
        assert_eq!((full.ip.as_str(), full.wan_ip.as_deref()), (FULL, Some(LONGEST)));
        let longest = store.add_host(&host("v6-longest", LONGEST)).await.unwrap();
        assert_eq!(longest.ip, LONGEST);
        let short = store.add_host(&host("v6-short", "2001:db8::1")).await.unwrap();
        assert_eq!(short.ip, "2001:db8::1");

        let found = store.find_hosts(&[FULL.to_owned()]).await.unwrap();
        assert_eq!(found.iter().map(fields).collect::<Vec<_>>(), [fields(&full)]);
        let found = store.find_hosts(&[LONGEST.to_owned()]).await.unwrap();
        assert_eq!(found.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["v6-longest"]);
        assert_conflict(
            store.add_host(&host("v6-again", FULL)).await,
            &format!("a host named \"v6-again\" or with IP {FULL} exists already"),
        );
    })
    .await;
}

#[tokio::test]
async fn a_taken_name_or_ip_is_a_conflict() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        store.add_host(&in_category("web1", "10.0.0.1", "Linux.Web", "nginx")).await.unwrap();
        assert_conflict(
            store.add_host(&host("web1", "10.0.0.2")).await,
            "a host named \"web1\" or with IP 10.0.0.2 exists already",
        );
        assert_conflict(
            store.add_host(&in_category("web2", "10.0.0.1", "Linux.Web", "nginx")).await,
            "a host named \"web2\" or with IP 10.0.0.1 exists already",
        );
        assert_eq!(store.host_count().await.unwrap(), 1);
        // Categories are created in the host's transaction: a refused host leaves none behind.
        assert_conflict(
            store.add_host(&in_category("web3", "10.0.0.1", "Linux.Db", "mysql")).await,
            "a host named \"web3\" or with IP 10.0.0.1 exists already",
        );
        assert_eq!((count(&db, "server_fun_categ").await, count(&db, "server_app_categ").await), (1, 1));
        let listed: Vec<HostFields> = store.list_hosts().await.unwrap().iter().map(fields).collect();
        assert_eq!(listed, [expected("web1", "10.0.0.1", Some("Linux.Web"), Some("nginx"))]);
        // A failed add leaves the store usable.
        let next = store.add_host(&host("web2", "10.0.0.2")).await.unwrap();
        assert_eq!(fields(&next), expected("web2", "10.0.0.2", None, None));
    })
    .await;
}

#[tokio::test]
async fn find_hosts_by_name_and_by_ip() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        for (name, ip) in [("localhost", "127.0.0.1"), ("web1", "10.0.0.1"), ("web2", "10.0.0.2"), ("db1", "::1")] {
            store.add_host(&host(name, ip)).await.unwrap();
        }
        let find = |keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            async move {
                let mut names: Vec<String> =
                    store.find_hosts(&keys).await.unwrap().into_iter().map(|h| h.name).collect();
                names.sort();
                names
            }
        };
        assert_eq!(find(&["web1"]).await, ["web1"]);
        assert_eq!(find(&["10.0.0.2"]).await, ["web2"]);
        assert_eq!(find(&["::1"]).await, ["db1"]);
        assert_eq!(find(&["localhost", "10.0.0.1"]).await, ["localhost", "web1"]);
        // One host named twice (by name and by IP) is found once.
        assert_eq!(find(&["web1", "10.0.0.1"]).await, ["web1"]);
        assert_eq!(find(&["10.9.9.9", "nosuch"]).await, Vec::<String>::new());
        assert_eq!(find(&["10.9.9.9", "web2"]).await, ["web2"]);
        assert_eq!(find(&[]).await, Vec::<String>::new());
        // No partial matches.
        assert_eq!(find(&["web", "10.0.0", "%"]).await, Vec::<String>::new());

        let row = &store.find_hosts(&["web1".to_owned()]).await.unwrap()[0];
        assert_eq!(fields(row), expected("web1", "10.0.0.1", None, None));
    })
    .await;
}

#[tokio::test]
async fn tokens_are_found_by_hash_and_a_taken_hash_is_a_conflict() {
    let hash_a = "a".repeat(64);
    let hash_b = format!("{:064x}", 0xdead_beef_u64);
    for_each_dialect(|db| {
        let (hash_a, hash_b) = (hash_a.clone(), hash_b.clone());
        async move {
            let store = &db.store;
            assert!(store.token_by_hash(&hash_a).await.unwrap().is_none());
            let first = store.insert_token("first-admin", &hash_a, "admin").await.unwrap();
            let second = store.insert_token("ci", &hash_b, "operator").await.unwrap();
            assert!(first > 0 && second > first);
            assert_eq!(store.token_count().await.unwrap(), 2);

            let found = store.token_by_hash(&hash_a).await.unwrap().expect("first token");
            assert_eq!((found.id, found.name.as_str(), found.role.as_str()), (first, "first-admin", "admin"));
            let found = store.token_by_hash(&hash_b).await.unwrap().expect("second token");
            assert_eq!((found.id, found.name.as_str(), found.role.as_str()), (second, "ci", "operator"));
            assert!(store.token_by_hash(&"b".repeat(64)).await.unwrap().is_none());
            assert!(store.token_by_hash("").await.unwrap().is_none());

            match store.insert_token("copy", &hash_a, "viewer").await {
                Err(StoreError::Conflict(message)) => assert_eq!(message, "a token with this hash exists already"),
                other => panic!("expected a Conflict, got {other:?}"),
            }
            assert_eq!(store.token_count().await.unwrap(), 2);
            let still = store.token_by_hash(&hash_a).await.unwrap().unwrap();
            assert_eq!((still.id, still.name.as_str(), still.role.as_str()), (first, "first-admin", "admin"));
        }
    })
    .await;
}

#[tokio::test]
async fn an_unsupported_database_url_is_refused() {
    for url in ["oracle://x", "", "file.db", "http://127.0.0.1/db"] {
        match Store::connect(url).await {
            Err(StoreError::UnsupportedUrl(got)) => {
                assert_eq!(got, url);
                assert_eq!(
                    StoreError::UnsupportedUrl(got).to_string(),
                    format!("database URL must start with sqlite:, mysql:, mariadb: or postgres: (got {url:?})")
                );
            }
            Err(other) => panic!("{url:?}: expected UnsupportedUrl, got {other}"),
            Ok(_) => panic!("{url:?}: connected"),
        }
    }
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(with_database("mysql://root@127.0.0.1:3306/test", "x"), "mysql://root@127.0.0.1:3306/x");
    assert_eq!(
        with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://postgres@127.0.0.1:5432", "x"), "postgres://postgres@127.0.0.1:5432/x");
}

#[tokio::test]
async fn admin_and_admin_in_any_case_are_one_user_on_every_database() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let spelled = UserName::parse("  Admin ").unwrap();
        assert_eq!(spelled.as_str(), "admin");
        let user = store.insert_user(&spelled, "$argon2id$hash", "admin").await.unwrap();
        assert_eq!((user.name.as_str(), user.role.as_str(), user.disabled_at), ("admin", "admin", None));
        for other in ["admin", "ADMIN", "aDmIn"] {
            let name = UserName::parse(other).unwrap();
            let found = store.user_by_name(&name).await.unwrap().unwrap_or_else(|| panic!("{other} finds admin"));
            assert_eq!(found.id, user.id, "{other}");
            match store.insert_user(&name, "$argon2id$other", "viewer").await {
                Err(StoreError::Conflict(message)) => assert_eq!(message, "a user named \"admin\" exists already"),
                other => panic!("expected a Conflict, got {other:?}"),
            }
        }
        assert_eq!(store.user_count().await.unwrap(), 1);
        for bad in ["", "   ", "ad min", "admin;", "é", &"a".repeat(65)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }

        // Sessions end with a password change and with disabling, in the same transaction.
        store.insert_session(&"1".repeat(64), user.id, &"c".repeat(64), now_ms()).await.unwrap();
        assert!(store.set_user_password(&UserName::parse("ADMIN").unwrap(), "$argon2id$new").await.unwrap());
        assert_eq!(store.session_count().await.unwrap(), 0);
        assert_eq!(store.user_by_id(user.id).await.unwrap().unwrap().password_hash, "$argon2id$new");
        store.insert_session(&"2".repeat(64), user.id, &"c".repeat(64), now_ms()).await.unwrap();
        assert!(store.session_by_hash(&"2".repeat(64)).await.unwrap().is_some());
        assert!(store.disable_user(&spelled).await.unwrap());
        assert!(store.disable_user(&spelled).await.unwrap(), "disabling twice still finds the user");
        assert!(store.session_by_hash(&"2".repeat(64)).await.unwrap().is_none());
        assert!(store.user_by_id(user.id).await.unwrap().unwrap().disabled_at.is_some());
        assert!(!store.disable_user(&UserName::parse("nobody").unwrap()).await.unwrap());
        // Enabling and role changes find the user in any spelling, also when nothing changes (MySQL counts
        // matched rows, not changed ones, for sqlx's connections).
        for _ in 0..2 {
            assert!(store.enable_user(&UserName::parse("ADMIN").unwrap()).await.unwrap());
            assert!(store.set_user_role(&UserName::parse("Admin").unwrap(), "operator").await.unwrap());
        }
        let row = store.user_by_id(user.id).await.unwrap().unwrap();
        assert_eq!((row.disabled_at, row.role.as_str()), (None, "operator"));
        assert!(!store.enable_user(&UserName::parse("nobody").unwrap()).await.unwrap());
        assert!(!store.set_user_role(&UserName::parse("nobody").unwrap(), "viewer").await.unwrap());

        // Expiry sweeps by idle time and by age.
        let now = now_ms();
        let bob = store.insert_user(&UserName::parse("bob").unwrap(), "$h", "viewer").await.unwrap();
        store.insert_session(&"3".repeat(64), bob.id, &"c".repeat(64), now - 10_000).await.unwrap();
        store.insert_session(&"4".repeat(64), bob.id, &"c".repeat(64), now).await.unwrap();
        assert_eq!(store.delete_expired_sessions(now - 5_000, now - 60_000).await.unwrap(), 1);
        assert!(store.session_by_hash(&"4".repeat(64)).await.unwrap().is_some());
        assert_eq!(store.delete_expired_sessions(now - 60_000, now + 1).await.unwrap(), 1);
        assert_eq!(store.session_count().await.unwrap(), 0);

        // Tokens of a user carry its state; listing by user; revoking once.
        let token = store.insert_user_token("ci", &"5".repeat(64), "viewer", Some(bob.id)).await.unwrap();
        let row = store.token_by_hash(&"5".repeat(64)).await.unwrap().unwrap();
        assert_eq!(
            (row.user_name.as_deref(), row.user_role.as_deref(), row.user_disabled_at),
            (Some("bob"), Some("viewer"), None)
        );
        store.touch_token(token, now, now - 60_000).await.unwrap();
        let listed = store.list_tokens(TokenScope::User(bob.id)).await.unwrap();
        assert_eq!(
            listed.iter().map(|t| (t.id, t.user.as_deref(), t.last_used_at)).collect::<Vec<_>>(),
            [(token, Some("bob"), Some(now))]
        );
        assert!(store.list_tokens(TokenScope::User(user.id)).await.unwrap().is_empty());
        assert!(store.revoke_token(token).await.unwrap());
        assert!(!store.revoke_token(token).await.unwrap());
        assert!(store.token_by_hash(&"5".repeat(64)).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_token_stored_before_users_existed_still_authenticates() {
    use hmac::{Hmac, Mac};
    let key = b"the secret key".to_vec();
    let token = format!("oms_{}", "ab".repeat(32));
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(token.as_bytes());
    let hash = hex::encode(mac.finalize().into_bytes());
    on_each_dialect(|dialect, url| {
        let (key, token, hash) = (key.clone(), token.clone(), hash.clone());
        async move {
            // The database as migration 0004 left it, with a token row written the way the server wrote them then.
            macro_rules! before_users {
                ($migrator:expr, $pool:ty, $url:expr, $insert:expr) => {{
                    let full = $migrator;
                    let old = sqlx::migrate::Migrator {
                        migrations: std::borrow::Cow::Owned(full.migrations[..4].to_vec()),
                        ..full
                    };
                    let pool = <$pool>::connect($url).await.unwrap();
                    old.run(&pool).await.unwrap();
                    sqlx::query($insert).bind(&hash).execute(&pool).await.unwrap();
                    pool.close().await;
                }};
            }
            let insert =
                "INSERT INTO api_tokens (name, token_hash, role, created_at) VALUES ('legacy', ?, 'operator', 1)";
            match dialect {
                Dialect::Sqlite => before_users!(
                    sqlx::migrate!("../migrations/sqlite"),
                    sqlx::SqlitePool,
                    &format!("{url}?mode=rwc"),
                    insert
                ),
                Dialect::MySql => before_users!(sqlx::migrate!("../migrations/mysql"), sqlx::MySqlPool, &url, insert),
                Dialect::Postgres => {
                    before_users!(
                        sqlx::migrate!("../migrations/postgres"),
                        sqlx::PgPool,
                        &url,
                        &insert.replace('?', "$1")
                    )
                }
            }
            let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("migrating to 0005: {e}"));
            let tokens = omserver::auth::Tokens::new(store.clone(), key);
            let who = tokens.authenticate(&token).await.unwrap().expect("the old token works");
            assert_eq!((who.name.as_str(), who.role, who.user_id), ("legacy", omserver::auth::Role::Operator, None));
            store.close().await;
        }
    })
    .await;
}
