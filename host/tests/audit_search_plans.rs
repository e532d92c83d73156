//! Audit searches whose plan depends on how many rows a filter leaves (more or fewer than 10 000: a common user
//! is read newest first past the user indexes, a rare one through them; a common host past the host index), alone,
//! with a command term, with a time received and paged, give on each dialect what a plain scan of every row gives.
//!
//! Needs the MariaDB and PostgreSQL servers running (see `common/scratch.rs`).

mod common;

use common::scratch::{on_each_dialect, plain_host};
use omserver::{
    audit::{AgentBatch, AuditConfig, AuditService},
    store::{AuditQuery, AuditRow, Dialect, Store},
};
use serde_json::{json, Value};

const KEY: &[u8] = b"test chain key";
/// Rows of the busy host: past the 10 000 that change a plan, for its user `alice` too.
const BUSY_ROWS: i64 = 12_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// 500 events of `stream` from `from`: `alice` mostly (as a login user `alice(1000)` one in ten), `root` one in
/// twelve, `mallory` one in 600; every 50th command holds the word the searches look for.
fn batch(stream: &str, from: i64) -> AgentBatch {
    let events: Vec<Value> = (from..from + 500)
        .map(|s| {
            let (user, login) = match s {
                s if s % 600 == 0 => ("mallory", ""),
                s if s % 12 == 0 => ("root", ""),
                s if s % 10 == 0 => ("deploy", "alice"),
                _ => ("alice", ""),
            };
            let command = if s % 50 == 0 { format!("cat /srv/Needle-{s}.conf") } else { format!("ls {stream} {s}") };
            json!({ "stream": stream, "seq": s, "history_id": s, "user": user, "login_user": login, "uid": 1000,
                    "time": "2026-11-20 10:00:00", "command": command })
        })
        .collect();
    serde_json::from_value(json!({ "events": events })).unwrap()
}

/// Which rows a case wants, by the rule.
type Wanted = Box<dyn Fn(&AuditRow) -> bool>;

fn is_user(r: &AuditRow, user: &str) -> bool {
    r.history_user == user
        || r.login_user
            .as_deref()
            .is_some_and(|l| l == user || l.strip_prefix(user).is_some_and(|t| t.starts_with('(')))
}

async fn check(dialect: Dialect, url: String) {
    let store = Store::connect(&url).await.unwrap();
    let busy = store.add_host(&plain_host("busy", "10.3.0.1")).await.unwrap().id;
    let quiet = store.add_host(&plain_host("quiet", "10.3.0.2")).await.unwrap().id;
    let audit =
        AuditService::start(store.clone(), store.audit_sink().unwrap(), AuditConfig::default(), KEY.to_vec()).unwrap();
    let mut middle = 0;
    for n in 0..BUSY_ROWS / 500 {
        if n == BUSY_ROWS / 1000 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            middle = now_ms();
        }
        let ack = audit.ingest_agent(Some(busy), batch("b", 1 + n * 500)).await.unwrap();
        assert_eq!(ack.stored, 500, "{dialect:?}: {ack:?}");
    }
    audit.ingest_agent(Some(quiet), batch("q", 1)).await.unwrap();
    let all = store.query_audit(&AuditQuery { limit: 1_000_000, ..AuditQuery::default() }).await.unwrap();
    assert_eq!(all.len() as i64, BUSY_ROWS + 500, "{dialect:?}");
    assert!(all.iter().filter(|r| is_user(r, "alice")).count() > 10_000, "alice is common");

    if dialect == Dialect::Sqlite {
        // The command index is kept behind the writer: the term cases below are about what it answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.audit_text_lag().await.unwrap() != Some(0) {
            assert!(std::time::Instant::now() < deadline, "the command index did not catch up in 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let user = |name: &str| AuditQuery { users: vec![name.to_owned()], limit: 100, ..AuditQuery::default() };
    let term = |text: &str| AuditQuery { text: Some(text.into()), limit: 100, ..AuditQuery::default() };
    let holds = |text: &'static str| move |r: &AuditRow| r.history_command.to_lowercase().contains(text);
    let needle = |q: AuditQuery| AuditQuery { text: Some("needle".into()), ..q };
    let has_needle = |r: &AuditRow| r.history_command.contains("Needle");
    let cases: Vec<(&str, AuditQuery, Wanted)> = vec![
        ("common user", user("alice"), Box::new(|r| is_user(r, "alice"))),
        ("rare user", user("mallory"), Box::new(|r| is_user(r, "mallory"))),
        ("common user, term", needle(user("alice")), Box::new(move |r| is_user(r, "alice") && has_needle(r))),
        ("rare user, term", needle(user("mallory")), Box::new(move |r| is_user(r, "mallory") && has_needle(r))),
        // SQLite asks its index for a term's rarest trigrams (`edl`), or for the whole phrase when every one of them
        // is in 5 000 rows or more (`ls `, `s b`: in every command of the busy host), or for the rare ones of a
        // term with common ones too.
        ("term of rare trigrams", term("NEEDLE"), Box::new(holds("needle"))),
        ("term of common trigrams", term("ls b"), Box::new(holds("ls b"))),
        ("term of both", term("LS B 119"), Box::new(holds("ls b 119"))),
        (
            "common host",
            AuditQuery { host_ids: Some(vec![busy]), limit: 100, ..AuditQuery::default() },
            Box::new(move |r| r.host_id == busy),
        ),
        (
            "rare host, term",
            needle(AuditQuery { host_ids: Some(vec![quiet]), limit: 100, ..AuditQuery::default() }),
            Box::new(move |r| r.host_id == quiet && has_needle(r)),
        ),
        (
            "common user, older half received",
            AuditQuery { received_to: Some(middle), ..user("alice") },
            Box::new(move |r| is_user(r, "alice") && r.received_at <= middle),
        ),
        (
            "term, newer half received",
            needle(AuditQuery { received_from: Some(middle), limit: 100, ..AuditQuery::default() }),
            Box::new(move |r| r.received_at >= middle && has_needle(r)),
        ),
    ];
    for (name, query, wanted) in cases {
        let expected: Vec<i64> = all.iter().filter(|r| wanted(r)).map(|r| r.id).take(100).collect();
        assert!(!expected.is_empty(), "{name}: the data has such rows");
        let found: Vec<i64> = store.query_audit(&query).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(found, expected, "{dialect:?}: {name}");
        // The next page, from the last row of this one.
        if let Some(&last) = found.last() {
            let expected: Vec<i64> = all.iter().filter(|r| wanted(r) && r.id < last).map(|r| r.id).take(100).collect();
            let next = AuditQuery { before: Some(last), ..query };
            let found: Vec<i64> = store.query_audit(&next).await.unwrap().iter().map(|r| r.id).collect();
            assert_eq!(found, expected, "{dialect:?}: {name}, next page");
        }
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_answer_as_a_scan_whichever_plan_their_filters_choose() {
    on_each_dialect(check).await;
}

/// The database at `url` with three hosts (`10.3.NET.1` to `.3`) and an audit service writing to it.
async fn three_hosts(url: &str, net: u8, names: [&str; 3]) -> (Store, std::sync::Arc<AuditService>, [i64; 3]) {
    let store = Store::connect(url).await.unwrap();
    let mut ids = [0; 3];
    for (i, name) in names.iter().enumerate() {
        ids[i] = store.add_host(&plain_host(name, &format!("10.3.{net}.{}", i + 1))).await.unwrap().id;
    }
    let audit =
        AuditService::start(store.clone(), store.audit_sink().unwrap(), AuditConfig::default(), KEY.to_vec()).unwrap();
    (store, audit, ids)
}

/// Hosts `quiet1` and `quiet2` (6 000 rows each, interleaved) under `busy` (3 000 newer rows): a listing of the
/// two quiet ones, asked again once the plan has learned their newest rows lie deep, and after more rows of
/// theirs arrive, gives what a scan gives; so does one host's listing, paged down its chain, from one of its
/// own rows and from another host's.
async fn check_deep(dialect: Dialect, url: String) {
    let (store, audit, [quiet1, quiet2, busy]) = three_hosts(&url, 1, ["quiet1", "quiet2", "busy"]).await;
    for n in 0..12 {
        audit.ingest_agent(Some(quiet1), batch("a", 1 + n * 500)).await.unwrap();
        audit.ingest_agent(Some(quiet2), batch("a", 1 + n * 500)).await.unwrap();
    }
    for n in 0..6 {
        audit.ingest_agent(Some(busy), batch("b", 1 + n * 500)).await.unwrap();
    }
    let scan = || async { store.query_audit(&AuditQuery { limit: 1_000_000, ..AuditQuery::default() }).await.unwrap() };
    let ids = |rows: Vec<AuditRow>| rows.iter().map(|r| r.id).collect::<Vec<i64>>();
    let both = AuditQuery { host_ids: Some(vec![quiet2, quiet1]), limit: 100, ..AuditQuery::default() };
    let of_quiet = |r: &AuditRow| r.host_id == quiet1 || r.host_id == quiet2;

    let all = scan().await;
    let expected: Vec<i64> = all.iter().filter(|r| of_quiet(r)).map(|r| r.id).take(100).collect();
    assert!(all[0].host_id == busy && expected.len() == 100, "{dialect:?}: the quiet hosts' rows lie under busy's");
    for asked in ["first", "again"] {
        assert_eq!(ids(store.query_audit(&both).await.unwrap()), expected, "{dialect:?}: {asked}");
    }
    let term = AuditQuery { text: Some("needle".into()), ..both.clone() };
    let expected_term: Vec<i64> =
        all.iter().filter(|r| of_quiet(r) && r.history_command.contains("Needle")).map(|r| r.id).take(100).collect();
    assert_eq!(ids(store.query_audit(&term).await.unwrap()), expected_term, "{dialect:?}: a term");

    // Newer rows of one quiet host, and of busy above them: the listing starts from the new newest.
    audit.ingest_agent(Some(quiet1), batch("a", 6001)).await.unwrap();
    audit.ingest_agent(Some(busy), batch("b", 3001)).await.unwrap();
    let all = scan().await;
    let expected: Vec<i64> = all.iter().filter(|r| of_quiet(r)).map(|r| r.id).take(100).collect();
    assert_eq!(ids(store.query_audit(&both).await.unwrap()), expected, "{dialect:?}: after new rows");
    let last = *expected.last().unwrap();
    let expected_next: Vec<i64> = all.iter().filter(|r| of_quiet(r) && r.id < last).map(|r| r.id).take(100).collect();
    let next = AuditQuery { before: Some(last), ..both.clone() };
    assert_eq!(ids(store.query_audit(&next).await.unwrap()), expected_next, "{dialect:?}: next page");

    // One host, paged from its own rows and from a row of another host.
    let one = AuditQuery { host_ids: Some(vec![quiet2]), limit: 100, ..AuditQuery::default() };
    let of_quiet2: Vec<i64> = all.iter().filter(|r| r.host_id == quiet2).map(|r| r.id).collect();
    let mut before = None;
    let mut listed = Vec::new();
    for page in 0..3 {
        let found = ids(store.query_audit(&AuditQuery { before, ..one.clone() }).await.unwrap());
        assert_eq!(found.len(), 100, "{dialect:?}: page {page}");
        before = found.last().copied();
        listed.extend(found);
    }
    assert_eq!(listed, of_quiet2[..300], "{dialect:?}: one host's pages");
    let other_row = all.iter().find(|r| r.host_id == quiet1 && r.id < of_quiet2[150]).unwrap().id;
    let expected: Vec<i64> = of_quiet2.iter().copied().filter(|id| *id < other_row).take(100).collect();
    let found = ids(store.query_audit(&AuditQuery { before: Some(other_row), ..one.clone() }).await.unwrap());
    assert_eq!(found, expected, "{dialect:?}: one host's page from another host's row");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_whose_newest_rows_lie_deep_and_one_host_down_its_chain_list_as_a_scan_does() {
    on_each_dialect(check_deep).await;
}

/// A set of two hosts under a busy one, listed until the plan keeps where the set's newest row lies (SQLite); then
/// the archived rows of one of them are put back, above that newest: the next listing, asked at once, starts from
/// them.
async fn check_restored(dialect: Dialect, url: String) {
    let (store, audit, [kept, archived, busy]) = three_hosts(&url, 2, ["kept", "archived", "busy"]).await;
    // Past the 10 000 rows that read a set of hosts newest first through the table.
    for n in 0..21 {
        audit.ingest_agent(Some(kept), batch("k", 1 + n * 500)).await.unwrap();
    }
    audit.ingest_agent(Some(archived), batch("r", 1)).await.unwrap();
    for n in 0..4 {
        audit.ingest_agent(Some(busy), batch("b", 1 + n * 500)).await.unwrap();
    }
    let ids = |rows: &[AuditRow]| rows.iter().map(|r| r.id).collect::<Vec<i64>>();
    let of = |host: i64| AuditQuery { host_ids: Some(vec![host]), limit: 1000, ..AuditQuery::default() };
    let rows = store.query_audit(&of(archived)).await.unwrap();
    let mut oldest_first = rows.clone();
    oldest_first.reverse();
    let newest = &rows[0];
    let line = |last_seq: i64| omserver::store::ArchivedUpTo {
        host_id: archived,
        last_seq,
        last_hash: newest.row_hash.clone(),
        mark: "test".into(),
        archived_at: now_ms(),
    };
    assert_eq!(store.delete_archived(&line(newest.chain_seq)).await.unwrap(), 500, "{dialect:?}");

    let both = AuditQuery { host_ids: Some(vec![kept, archived]), limit: 100, ..AuditQuery::default() };
    let kept_rows = ids(&store.query_audit(&AuditQuery { limit: 100, ..of(kept) }).await.unwrap());
    for asked in ["first", "again", "once more"] {
        assert_eq!(ids(&store.query_audit(&both).await.unwrap()), kept_rows[..100], "{dialect:?}: {asked}");
    }
    store.restore_archived(&oldest_first, &line(0)).await.unwrap();
    assert_eq!(ids(&store.query_audit(&both).await.unwrap()), ids(&rows)[..100], "{dialect:?}: after the restore");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_put_back_above_a_deep_sets_newest_are_listed_at_once() {
    on_each_dialect(check_restored).await;
}
