//! Three servers on one PostgreSQL behind haproxy (the test environment's haproxy piece; the test writes its own
//! configuration), as a deployment runs them. Ten `omaudit-agent`s (real processes, `common/agents.rs`) send
//! the commands typed on their hosts through the balancer while jobs are submitted through it; one server is
//! SIGKILLed in the middle and started again later. Every command typed is stored exactly once, no agent
//! reported a loss, `omserver audit verify` finds every chain whole, and every
//! job ends with a definite status: the killed server's running jobs `failed` with their hosts `lost` (ended as
//! interrupted by the server itself when it restarts within the lease), the rest (queued ones included, wherever
//! they were accepted) `succeeded`. A schedule firing every 2 s fires each slot once and skips none throughout.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    agents::{agent_binary, assert_exactly_once, drive, wait_for, Agent},
    balancer::Balancer,
    database::block_on,
    scratch::Scratch,
    testenv::testenv,
    Server,
};
use omserver::store::Dialect;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const AGENTS: usize = 10;
/// Commands typed on each agent's host: about 20 s of prompts on 2 cores beside three servers, so that they span
/// the kill and the restart.
const PROMPTS: usize = 1_500;
const JOBS: usize = 15;

/// A server of the test: two job slots.
fn node(database_url: &str, name: &str, token: Option<&str>) -> Server {
    common::cluster::node(database_url, name, token, "max_concurrent_jobs = 2")
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

    let binary = agent_binary();
    let agents: Vec<Arc<Agent>> = (0..AGENTS)
        .map(|i| {
            let mut agent = Agent::register(&a, &binary, i);
            agent.server = balancer.base.clone();
            Arc::new(agent)
        })
        .collect();
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

    let done = Arc::new(AtomicUsize::new(0));
    let drivers = drive(&agents, PROMPTS, &done);
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

    let total = AGENTS * PROMPTS;
    wait_for(&done, total / 4, Duration::from_secs(120));
    b.kill();
    let killed = Instant::now();
    let killed_at = omserver::store::now_ms();
    let typed_at_kill = done.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(6));
    b.restart();
    let down = killed.elapsed();
    let restarted_at = omserver::store::now_ms();
    let typed_at_restart = done.load(Ordering::Relaxed);

    let complaints: Vec<String> = drivers.into_iter().flat_map(|d| d.join().expect("a driver thread")).collect();
    assert!(complaints.is_empty(), "prompts complained:\n{}", complaints.join("\n"));
    for agent in &agents {
        agent.flush_until_empty(Duration::from_secs(60));
    }
    let jobs = submitter.join().expect("the submitting thread");
    let failed = agents.iter().filter(|a| a.log().contains("delivery failed")).count();
    println!(
        "{total} commands typed: {typed_at_kill} when server b was killed, {typed_at_restart} when it started again \
         ({down:?} later); {failed} agents logged failed deliveries"
    );

    // Every command typed stored once, whichever server stored it; no loss reported; every chain whole.
    assert_exactly_once(&a, &scratch.url, &agents, PROMPTS, &[]);

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
