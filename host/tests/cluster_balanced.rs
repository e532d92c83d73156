//! Three servers on one PostgreSQL behind haproxy (the test environment's haproxy piece; the test writes its own
//! configuration), as a deployment runs them. Ten agents send their hosts' events through the balancer while
//! jobs are submitted through it; one server is SIGKILLed in the middle and started again later. Every event an
//! agent was told is stored is stored exactly once, `omserver audit verify` finds every chain whole, and every
//! job ends with a definite status: the killed server's running jobs `failed` with their hosts `lost` (ended as
//! interrupted by the server itself when it restarts within the lease), the rest (queued ones included, wherever
//! they were accepted) `succeeded`. A schedule firing every 2 s fires each slot once and skips none throughout.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{balancer::Balancer, cli, database::block_on, scratch::Scratch, testenv::testenv, Server};
use omserver::store::Dialect;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use sqlx::Connection;

const AGENTS: usize = 10;
const BATCHES: i64 = 60;
const PER_BATCH: i64 = 25;
const JOBS: usize = 15;

/// A server of the test: two job slots.
fn node(database_url: &str, name: &str, token: Option<&str>) -> Server {
    common::cluster::node(database_url, name, token, "max_concurrent_jobs = 2")
}

/// An agent: its host's events, batch after batch, each sent until the balancer answers that it is stored.
fn agent(client: Client, base: String, token: String, host: usize) -> u64 {
    let mut resent = 0;
    for batch in 0..BATCHES {
        let events: Vec<Value> = (1..=PER_BATCH)
            .map(|i| {
                let seq = batch * PER_BATCH + i;
                json!({ "stream": "s", "seq": seq, "history_id": seq, "user": "root",
                        "time": "2026-12-05 05:00:00", "command": format!("agent {host} event {seq}") })
            })
            .collect();
        let body = json!({ "events": events });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = client.post(format!("{base}/api/audit/events")).bearer_auth(&token).json(&body).send();
            if let Ok(response) = sent {
                if response.status().is_success() {
                    let ack: Value = response.json().expect("an acknowledgement");
                    let told = ack["stored"].as_i64().unwrap_or(0) + ack["duplicates"].as_i64().unwrap_or(0);
                    assert_eq!(told, PER_BATCH, "host {host} batch {batch}: {ack}");
                    break;
                }
            }
            assert!(Instant::now() < deadline, "host {host}: batch {batch} not stored within 60 s");
            resent += 1;
            thread::sleep(Duration::from_millis(100));
        }
        // An agent flushes as its spool fills: the batches span the kill and the restart.
        thread::sleep(Duration::from_millis(150));
    }
    resent
}

#[test]
fn three_servers_behind_haproxy_lose_nothing_when_one_is_killed() {
    let env = testenv();
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let a = node(&scratch.url, "a", None);
    let token = a.token.clone();
    let mut b = node(&scratch.url, "b", Some(&token));
    let c = node(&scratch.url, "c", Some(&token));
    let balancer = Balancer::start(&env.haproxy.binary, &[&a.base, &b.base, &c.base]);

    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        let (status, body) =
            a.post("/api/hosts", &json!({ "name": format!("ag{i}"), "ip": format!("127.0.1.{}", i + 1) }));
        assert_eq!(status, 201, "{body}");
        let out = cli(&a, &["hosts", "token", &format!("ag{i}")]);
        assert!(out.status.success(), "{out:?}");
        tokens.push(out.stdout.trim().to_owned());
    }
    let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    // A saved job fired every 2 s by whichever server claims each slot.
    let (status, saved) = a.post(
        "/api/templates",
        &json!({ "name": "tick", "module": 9003, "params": { "seconds": 0 }, "targets": { "hosts": ["localhost"] } }),
    );
    assert_eq!(status, 201, "{saved}");
    let (status, schedule) =
        a.post("/api/schedules", &json!({ "name": "every2", "template": saved["id"], "cron": "*/2 * * * * *" }));
    assert_eq!(status, 201, "{schedule}");
    let schedule = schedule["id"].as_i64().unwrap();

    let agents: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(host, agent_token)| {
            let (client, base) = (client.clone(), balancer.base.clone());
            thread::spawn(move || agent(client, base, agent_token, host))
        })
        .collect();
    let submitting = Arc::new(AtomicBool::new(true));
    let submitter = {
        let (client, base, token, submitting) =
            (client.clone(), balancer.base.clone(), token.clone(), submitting.clone());
        thread::spawn(move || {
            let mut ids = Vec::new();
            let body = json!({ "module": 9003, "hosts": ["localhost"], "params": { "seconds": 3 } });
            while ids.len() < JOBS {
                let sent = client.post(format!("{base}/api/jobs")).bearer_auth(&token).json(&body).send();
                match sent {
                    Ok(response) if response.status() == 202 => {
                        ids.push(response.json::<Value>().unwrap()["id"].as_i64().unwrap());
                        thread::sleep(Duration::from_millis(400));
                    }
                    _ => thread::sleep(Duration::from_millis(100)),
                }
            }
            submitting.store(false, Ordering::SeqCst);
            ids
        })
    };

    thread::sleep(Duration::from_secs(2));
    b.kill();
    let killed = Instant::now();
    let killed_at = omserver::store::now_ms();
    thread::sleep(Duration::from_secs(6));
    b.restart();
    let down = killed.elapsed();
    let restarted_at = omserver::store::now_ms();

    let resent: u64 = agents.into_iter().map(|agent| agent.join().expect("an agent thread")).sum();
    let jobs = submitter.join().expect("the submitting thread");
    println!("agents resent {resent} batches; server b was down {down:?}");

    // Every event once, whichever server stored it; every chain whole.
    let counts = block_on(async {
        let mut db = sqlx::PgConnection::connect(&scratch.url).await.unwrap();
        sqlx::query_as::<_, (String, i64, i64, i64)>(
            "SELECT l.server_name, COUNT(*), COUNT(DISTINCT h.seq), MAX(h.seq) FROM server_history h \
             JOIN server_list l ON l.id = h.host_id GROUP BY l.server_name ORDER BY l.server_name",
        )
        .fetch_all(&mut db)
        .await
        .unwrap()
    });
    let events = BATCHES * PER_BATCH;
    let want: Vec<_> = (0..AGENTS).map(|i| (format!("ag{i}"), events, events, events)).collect();
    assert_eq!(counts, want, "each host's events, each once");
    let verify = cli(&a, &["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {verify:?}");

    // Every job ends: failed where server b died under it (its host lost), succeeded everywhere else.
    let status_of = |id: i64| -> Value {
        let response = client.get(format!("{}/api/jobs/{id}", balancer.base)).bearer_auth(&token).send();
        response.ok().filter(|r| r.status().is_success()).and_then(|r| r.json().ok()).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let ended: Vec<Value> = jobs
        .iter()
        .map(|&id| loop {
            let job = status_of(id);
            if job["status"].as_str().is_some_and(|s| !matches!(s, "queued" | "running")) {
                break job;
            }
            assert!(Instant::now() < deadline, "job {id} has not ended: {job}");
            thread::sleep(Duration::from_millis(200));
        })
        .collect();
    let mut lost = 0;
    for job in &ended {
        match job["status"].as_str() {
            Some("succeeded") => {}
            // Ended by another server once b's lease ran out, or by b itself as it started again.
            Some("failed") => {
                lost += 1;
                let error = job["error"].as_str().unwrap_or_default();
                assert!(error == "server b stopped answering" || error.starts_with("interrupted"), "{job}");
                assert_eq!(job["results"][0]["status"], "lost", "{job}");
            }
            _ => panic!("not a definite end: {job}"),
        }
    }
    println!("{} jobs: {} succeeded, {lost} failed with server b", ended.len(), ended.len() - lost);

    // The schedule: each 2-second slot once, none skipped, through the kill and the restart.
    let (status, fires) = a.get(&format!("/api/schedules/{schedule}/fires?limit=1000"));
    assert_eq!(status, 200, "{fires}");
    let mut slots: Vec<i64> = fires.as_array().unwrap().iter().map(|f| f["slot"].as_i64().unwrap()).collect();
    slots.sort_unstable();
    let recorded = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), recorded, "a slot fired twice: {fires}");
    assert!(slots.windows(2).all(|w| w[1] - w[0] == 2_000), "a slot skipped: {slots:?}");
    let fired = fires.as_array().unwrap().iter().filter(|f| f["outcome"] == "fired").count();
    println!("the schedule recorded {recorded} slots, {fired} fired (the others skipped: its last job still ran)");
    assert!(slots[0] < killed_at && slots[recorded - 1] > restarted_at, "slots around the kill: {fires}");
    assert!(fired >= 2, "{fires}");
    assert!(!submitting.load(Ordering::SeqCst));
    drop((balancer, a, b, c));
    block_on(scratch.drop_database());
}
