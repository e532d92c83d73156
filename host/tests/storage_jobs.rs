//! Jobs in the [`Store`] against real databases, every check on SQLite, MariaDB/MySQL and PostgreSQL, each in a
//! fresh database of its own (as `storage.rs`): jobs and their results, the history's filters, batches and
//! re-runs, schedule fires, and what a server leaves unfinished (and, where servers share the database, the queue
//! they take jobs from).

use std::fmt::Write as _;

use omserver::store::{now_ms, JobQuery, JobRow, NewJob, NewSchedule, NewTemplate, ResultRow, Store, StoreError};

mod common;

use common::scratch::{for_each_dialect, plain_job};

/// 1 MiB of text: every line has multi-byte characters (a 4-byte one needs MySQL's utf8mb4), quotes, backslashes,
/// tabs and carriage returns.
fn megabyte_of_text() -> String {
    const SIZE: usize = 1 << 20;
    let mut text = String::with_capacity(SIZE);
    let mut line = 0u32;
    while text.len() < SIZE - 200 {
        writeln!(text, "{line:07} é ü → ✓ 🦀 \"double\" 'single' `tick` \\back\\slash\ttab\r").unwrap();
        line += 1;
    }
    while text.len() < SIZE {
        text.push('.');
    }
    assert_eq!(text.len(), SIZE);
    text
}

fn assert_same_text(what: &str, got: &str, want: &str) {
    if got != want {
        let at = got.bytes().zip(want.bytes()).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("{what} differs: {} bytes stored, {} expected, first difference at byte {at}", got.len(), want.len());
    }
}

fn assert_results(got: &[ResultRow], want: &[ResultRow]) {
    let keys = |rows: &[ResultRow]| -> Vec<(String, String, Option<i64>, i64)> {
        rows.iter().map(|r| (r.host.clone(), r.status.clone(), r.rc, r.duration_ms)).collect()
    };
    assert_eq!(keys(got), keys(want));
    for (g, w) in got.iter().zip(want) {
        assert_same_text(&format!("{} stdout", w.host), &g.stdout, &w.stdout);
        assert_same_text(&format!("{} stderr", w.host), &g.stderr, &w.stderr);
    }
}

fn newest(limit: i64) -> JobQuery {
    JobQuery { limit, ..JobQuery::default() }
}

fn in_range(what: &str, value: Option<i64>, from: i64, to: i64) {
    let value = value.unwrap_or_else(|| panic!("{what} is not set"));
    assert!((from..=to).contains(&value), "{what} = {value}, not in {from}..={to}");
}

#[tokio::test]
async fn a_job_goes_queued_running_finished_and_its_results_round_trip_exactly() {
    let big = megabyte_of_text();
    for_each_dialect(|db| {
        let big = big.clone();
        async move {
            let store = &db.store;
            assert!(store.job(1).await.unwrap().is_none());

            let t0 = now_ms();
            let id = store.insert_job(&plain_job("admin-token")).await.unwrap();
            let t1 = now_ms();
            assert!(id > 0);
            let JobRow {
                id: got_id,
                module_id,
                module_version,
                backend,
                params,
                hosts,
                status,
                error,
                created_by,
                created_at,
                started_at,
                finished_at,
                rollout,
                rerun_of,
                template_id,
                definition,
            } = store.job(id).await.unwrap().expect("the job just inserted");
            assert_eq!((rollout, rerun_of, template_id, definition), (None, None, None, None));
            assert_eq!(
                (got_id, module_id, module_version.as_str(), backend.as_str(), params.as_str(), hosts.as_str()),
                (id, 1003, "1.0.0", "local", r#"{"lines":5}"#, r#"["localhost","web1"]"#)
            );
            assert_eq!((status.as_str(), error, created_by.as_str()), ("queued", None, "admin-token"));
            in_range("created_at", Some(created_at), t0, t1);
            assert_eq!((started_at, finished_at), (None, None));
            assert!(store.job_results(id).await.unwrap().is_empty());

            store.mark_job_running(id, "test-node").await.unwrap();
            let t2 = now_ms();
            let running = store.job(id).await.unwrap().unwrap();
            assert_eq!((running.status.as_str(), running.finished_at), ("running", None));
            in_range("started_at", running.started_at, t1, t2);
            // Only a queued job becomes running: a second call is refused and changes nothing.
            let again = store.mark_job_running(id, "test-node").await;
            assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
            assert_eq!(store.job(id).await.unwrap().unwrap().started_at, running.started_at);

            let results = vec![
                ResultRow {
                    host: "web1".into(),
                    status: "ok".into(),
                    rc: Some(0),
                    stdout: big.clone(),
                    stderr: String::new(),
                    duration_ms: 1234,
                },
                ResultRow {
                    host: "localhost".into(),
                    status: "failed".into(),
                    rc: Some(2),
                    stdout: "partial\n".into(),
                    stderr: "tail: cannot open '/var/log/messages': No such file or directory\n".into(),
                    duration_ms: 7,
                },
                ResultRow {
                    host: "db1".into(),
                    status: "unreachable".into(),
                    rc: None,
                    stdout: String::new(),
                    stderr: "connection refused".into(),
                    duration_ms: 0,
                },
            ];
            store.finish_job(id, "failed", Some("2 of 3 hosts did not succeed"), &results).await.unwrap();
            let t3 = now_ms();
            let done = store.job(id).await.unwrap().unwrap();
            assert_eq!((done.status.as_str(), done.error.as_deref()), ("failed", Some("2 of 3 hosts did not succeed")));
            assert_eq!((done.created_at, done.started_at), (created_at, running.started_at));
            in_range("finished_at", done.finished_at, t2, t3);
            assert_results(&store.job_results(id).await.unwrap(), &results);

            // Another job's results are its own; a job without results has none.
            let other = store.insert_job(&plain_job("cli:root")).await.unwrap();
            assert!(other > id);
            store.finish_job(other, "succeeded", None, &results[1..2]).await.unwrap();
            let other_row = store.job(other).await.unwrap().unwrap();
            assert_eq!((other_row.status.as_str(), other_row.error, other_row.started_at), ("succeeded", None, None));
            assert_results(&store.job_results(other).await.unwrap(), &results[1..2]);
            assert_results(&store.job_results(id).await.unwrap(), &results);
            assert!(store.job_results(other + 1).await.unwrap().is_empty());
            assert!(store.job(other + 1).await.unwrap().is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn recent_jobs_are_newest_first_and_limited() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(store.insert_job(&plain_job(&format!("user{n}"))).await.unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
        let newest_first: Vec<i64> = ids.iter().rev().copied().collect();

        let recent = |limit: i64| async move {
            store
                .query_jobs(&newest(limit))
                .await
                .unwrap()
                .into_iter()
                .map(|j| (j.id, j.created_by))
                .collect::<Vec<_>>()
        };
        let all = recent(100).await;
        assert_eq!(all.iter().map(|j| j.0).collect::<Vec<_>>(), newest_first);
        assert_eq!(all.iter().map(|j| j.1.as_str()).collect::<Vec<_>>(), ["user4", "user3", "user2", "user1", "user0"]);
        assert_eq!(recent(3).await.iter().map(|j| j.0).collect::<Vec<_>>(), newest_first[..3]);
        assert_eq!(recent(1).await.iter().map(|j| j.0).collect::<Vec<_>>(), newest_first[..1]);
        assert!(recent(0).await.is_empty());
        assert_eq!(recent(5).await.len(), 5);
        let full = &store.query_jobs(&newest(1)).await.unwrap()[0];
        assert_eq!(
            (full.status.as_str(), full.module_id, full.hosts.as_str()),
            ("queued", 1003, r#"["localhost","web1"]"#)
        );
    })
    .await;
}

#[tokio::test]
async fn job_history_filters_narrow_exactly_on_every_dialect() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let job = |by: &'static str, module_id: u32, hosts: &'static str| NewJob {
            module_id,
            hosts,
            created_by: by,
            ..plain_job(by)
        };
        let a = store.insert_job(&job("alice", 1003, r#"["web1","web2"]"#)).await.unwrap();
        let b = store.insert_job(&job("Alice", 1003, r#"["web10"]"#)).await.unwrap();
        let c = store.insert_job(&job("bob", 1004, r#"["db1","web1"]"#)).await.unwrap();
        store.mark_job_running(c, "test-node").await.unwrap();
        let ids = |filter: JobQuery| async move {
            store.query_jobs(&filter).await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>()
        };
        let with = |f: fn(&mut JobQuery)| {
            let mut q = newest(100);
            f(&mut q);
            q
        };
        // A user is compared byte for byte, also under MariaDB's case-insensitive collation.
        assert_eq!(ids(with(|q| q.created_by = Some("alice".into()))).await, [a]);
        assert_eq!(ids(with(|q| q.created_by = Some("ALICE".into()))).await, Vec::<i64>::new());
        assert_eq!(ids(with(|q| q.module_id = Some(1003))).await, [b, a]);
        assert_eq!(ids(with(|q| q.status = Some("running".into()))).await, [c]);
        assert_eq!(ids(with(|q| q.status = Some("RUNNING".into()))).await, Vec::<i64>::new());
        // A host is one of the targets by its whole name: web1 is not web10.
        assert_eq!(ids(with(|q| q.host = Some("web1".into()))).await, [c, a]);
        assert_eq!(ids(with(|q| q.host = Some("web".into()))).await, Vec::<i64>::new());
        assert_eq!(ids(with(|q| q.host = Some(r#"web1","web2"#.into()))).await, Vec::<i64>::new());
        assert_eq!(ids(JobQuery { before: Some(c), ..newest(100) }).await, [b, a]);
        assert_eq!(
            ids(with(|q| {
                q.module_id = Some(1003);
                q.host = Some("web10".into());
            }))
            .await,
            [b]
        );
        let created = store.job(b).await.unwrap().unwrap().created_at;
        assert_eq!(ids(with(|q| q.from_ms = Some(i64::MAX))).await, Vec::<i64>::new());
        let until_b = JobQuery { to_ms: Some(created), ..newest(100) };
        assert!(ids(until_b).await.contains(&b));
        assert_eq!(
            ids(JobQuery { from_ms: Some(0), to_ms: Some(created - 60_000), ..newest(100) }).await,
            Vec::<i64>::new()
        );
    })
    .await;
}

#[tokio::test]
async fn batches_keep_their_results_as_they_finish_and_reruns_link_back() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let rollout = r#"{"batch":"50%","max_failed":1,"pause_secs":0}"#;
        let id = store.insert_job(&NewJob { rollout: Some(rollout), ..plain_job("a") }).await.unwrap();
        assert_eq!(store.job(id).await.unwrap().unwrap().rollout.as_deref(), Some(rollout));
        store.mark_job_running(id, "test-node").await.unwrap();
        let row = |host: &str, status: &str| ResultRow {
            host: host.into(),
            status: status.into(),
            rc: None,
            stdout: String::new(),
            stderr: format!("{status} here"),
            duration_ms: 5,
        };

        let t0 = now_ms();
        store.start_batch(id, 0, r#"["localhost"]"#).await.unwrap();
        let open = store.job_batches(id).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].batch_no, open[0].hosts.as_str(), open[0].finished_at), (0, r#"["localhost"]"#, None));
        in_range("started_at", Some(open[0].started_at), t0, now_ms());
        store.finish_batch(id, 0, &[row("localhost", "ok")]).await.unwrap();
        // The first batch's results are stored before the job ends.
        assert_results(&store.job_results(id).await.unwrap(), &[row("localhost", "ok")]);
        store.start_batch(id, 1, r#"["web1"]"#).await.unwrap();
        store.finish_batch(id, 1, &[row("web1", "cancelled")]).await.unwrap();
        store.finish_job(id, "cancelled", Some("cancelled"), &[row("web2", "skipped")]).await.unwrap();

        let batches = store.job_batches(id).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.batch_no).collect::<Vec<_>>(), vec![0, 1]);
        assert!(batches.iter().all(|b| b.finished_at.is_some()), "{batches:?}");
        let want = [row("localhost", "ok"), row("web1", "cancelled"), row("web2", "skipped")];
        assert_results(&store.job_results(id).await.unwrap(), &want);

        assert!(store.reruns_of(id).await.unwrap().is_empty());
        let first = store.insert_job(&NewJob { rerun_of: Some(id), ..plain_job("b") }).await.unwrap();
        let second = store.insert_job(&NewJob { rerun_of: Some(id), ..plain_job("b") }).await.unwrap();
        assert_eq!(store.reruns_of(id).await.unwrap(), vec![first, second]);
        assert_eq!(store.job(first).await.unwrap().unwrap().rerun_of, Some(id));
    })
    .await;
}

#[tokio::test]
async fn a_schedule_slot_is_claimed_once_and_a_template_with_schedules_stays() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let template = NewTemplate {
            name: "nightly",
            description: "",
            module_id: 1003,
            params: "{}",
            targets: r#"{"hosts":["web1"]}"#,
            backend: None,
            rollout: None,
            timeout_secs: None,
            actor: "a",
        };
        let template_id = store.add_template(&template).await.unwrap();
        let schedule = NewSchedule {
            name: "every minute",
            template_id,
            cron: "* * * * *",
            timezone: "UTC",
            enabled: true,
            overlap: "skip",
            catch_up_secs: 0,
            active_from: 1,
            actor: "a",
        };
        let id = store.add_schedule(&schedule).await.unwrap();
        assert!(store.claim_fire(id, 60_000, "claimed", None).await.unwrap(), "the first claim wins");
        assert!(!store.claim_fire(id, 60_000, "claimed", None).await.unwrap(), "a second claim of the slot loses");
        assert!(!store.claim_fire(id, 60_000, "missed", Some("late")).await.unwrap());
        assert!(store.claim_fire(id, 120_000, "missed", Some("down")).await.unwrap());
        store.settle_fire(id, 60_000, "fired", Some(7), None).await.unwrap();
        let fires = store.schedule_fires(id, 10).await.unwrap();
        let seen: Vec<(i64, &str, Option<i64>)> =
            fires.iter().map(|f| (f.slot, f.outcome.as_str(), f.job_id)).collect();
        assert_eq!(seen, [(120_000, "missed", None), (60_000, "fired", Some(7))]);
        assert_eq!(store.last_fire_slots().await.unwrap().get(&id), Some(&120_000));
        assert!(store.claim_fire(id, 180_000, "claimed", None).await.unwrap());
        assert_eq!(store.fail_unsettled_fires().await.unwrap(), 1, "a claim left by a stopped server fails");

        assert!(matches!(store.delete_template(template_id).await, Err(StoreError::Conflict(_))));
        assert!(store.delete_schedule(id).await.unwrap(), "the schedule goes with its fires");
        assert!(store.schedule_fires(id, 10).await.unwrap().is_empty());
        assert!(store.delete_template(template_id).await.unwrap());
    })
    .await;
}

/// A job back in the queue of a shared database (`id`, module hash "0"): one server takes it, no other can; given
/// back, it can be taken again; ended as untaken only while nobody holds it.
async fn queued_again(store: &Store, id: i64) {
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.status, "queued");
    assert!(store.untaken_since(now_ms() + 1).await.unwrap().contains(&id));
    assert_eq!(store.claim_queued_job("b", &["another-module".into()]).await.unwrap(), None, "not its module");
    let taken = store.claim_queued_job("b", &["0".into()]).await.unwrap().expect("taken");
    assert_eq!((taken.id, taken.module_sha256.as_str(), taken.cancel_asked), (id, "0", false));
    assert_eq!(store.claim_queued_job("c", &["0".into()]).await.unwrap(), None, "taken once");
    let untaken = store.end_untaken_job(id, "cancelled", "cancelled", &[]).await;
    assert!(matches!(untaken, Err(StoreError::Conflict(_))), "a taken job is its server's to end: {untaken:?}");
    store.release_claim(id, "b").await.unwrap();
    assert_eq!(store.claim_queued_job("c", &["0".into()]).await.unwrap().map(|j| j.id), Some(id));
    store.release_claim(id, "c").await.unwrap();
}

#[tokio::test]
async fn unfinished_jobs_of_a_server_fail_keeping_stored_results_and_losing_the_other_hosts() {
    for_each_dialect(|db| async move {
        let store = &db.store;
        let row = |host: &str, status: &str| ResultRow {
            host: host.into(),
            status: status.into(),
            rc: Some(0),
            stdout: "done".into(),
            stderr: String::new(),
            duration_ms: 5,
        };
        let queued = store.insert_job(&plain_job("a")).await.unwrap();
        // Running its second batch: the first one's result is stored, web1's is not.
        let running = store.insert_job(&plain_job("a")).await.unwrap();
        store.mark_job_running(running, "test-node").await.unwrap();
        store.start_batch(running, 0, r#"["localhost"]"#).await.unwrap();
        store.finish_batch(running, 0, &[row("localhost", "ok")]).await.unwrap();
        store.start_batch(running, 1, r#"["web1"]"#).await.unwrap();
        // Another server's job, running there: not this server's to fail.
        let elsewhere = store.insert_job(&NewJob { node: Some("other-node"), ..plain_job("a") }).await.unwrap();
        store.mark_job_running(elsewhere, "other-node").await.unwrap();
        let mut finished = Vec::new();
        for (status, error) in
            [("succeeded", None), ("failed", Some("1 of 1 hosts did not succeed")), ("cancelled", Some("cancelled"))]
        {
            let id = store.insert_job(&plain_job("a")).await.unwrap();
            store.mark_job_running(id, "test-node").await.unwrap();
            store.finish_job(id, status, error, &[]).await.unwrap();
            finished.push((id, store.job(id).await.unwrap().unwrap()));
        }

        let t0 = now_ms();
        let interrupted = "interrupted: the server stopped before the job finished";
        // Where servers share the database, a queued job the server took and had not started goes back to the
        // queue, for any server; elsewhere it fails with the rest.
        let shared = store.shared_by_servers();
        let failed = if shared { vec![running] } else { vec![queued, running] };
        assert_eq!(store.fail_unfinished_jobs("test-node", true, interrupted).await.unwrap(), failed);
        let t1 = now_ms();
        if shared {
            queued_again(store, queued).await;
        }
        for id in failed.iter().copied() {
            let job = store.job(id).await.unwrap().unwrap();
            assert_eq!(
                (job.status.as_str(), job.error.as_deref()),
                ("failed", Some("interrupted: the server stopped before the job finished")),
                "job {id}"
            );
            in_range("finished_at", job.finished_at, t0, t1);
        }

        let batch = &store.job_batches(running).await.unwrap()[1];
        in_range("the running batch's finished_at", batch.finished_at, t0, t1);
        // One result per host: what was stored stays, every other host is lost, saying why.
        let results = |id| async move {
            let rows = store.job_results(id).await.unwrap();
            rows.into_iter().map(|r| (r.host, r.status, r.stderr)).collect::<Vec<_>>()
        };
        let lost = |host: &str| (host.to_owned(), "lost".to_owned(), interrupted.to_owned());
        if !shared {
            assert_eq!(store.job(queued).await.unwrap().unwrap().started_at, None);
            assert_eq!(results(queued).await, [lost("localhost"), lost("web1")]);
        }
        assert_eq!(results(running).await, [("localhost".into(), "ok".into(), String::new()), lost("web1")]);
        // The process that ran it, were it still alive, cannot end it again nor add results.
        for late in [
            store.finish_batch(running, 1, &[row("web1", "ok")]).await,
            store.finish_job(running, "succeeded", None, &[]).await,
        ] {
            assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
        }
        assert_eq!(store.job(running).await.unwrap().unwrap().status, "failed");
        assert_eq!(results(running).await.len(), 2);
        for (id, before) in &finished {
            let after = store.job(*id).await.unwrap().unwrap();
            assert_eq!(
                (after.status, after.error, after.started_at, after.finished_at),
                (before.status.clone(), before.error.clone(), before.started_at, before.finished_at),
                "a finished job is left alone"
            );
        }
        assert_eq!(store.job(elsewhere).await.unwrap().unwrap().status, "running", "another server's job");
        assert_eq!(
            store.fail_unfinished_jobs("test-node", true, interrupted).await.unwrap(),
            Vec::<i64>::new(),
            "nothing is left"
        );
    })
    .await;
}
