//! Schedules through the real server: a per-2-second schedule fires within a second of each slot, a server
//! killed with SIGKILL and restarted never fires a slot twice and records the ones it missed (or catches the
//! newest up), a disabled schedule never fires, a saved job whose module is gone records a failed fire and the
//! scheduler goes on, overlapping runs are skipped or queued, and bad input is refused naming the field.

mod common;

use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use common::{fixture, install, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn server() -> Server {
    let server = Server::start_with(Options { seed: vec![], ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    let (status, body) = server.post("/api/hosts", &json!({ "name": "l1", "ip": "127.0.0.131" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server
}

/// A saved job running fx_roll on `l1` for `seconds`.
fn template(server: &Server, name: &str, seconds: u32) -> i64 {
    let body =
        json!({ "name": name, "module": 9008, "params": { "seconds": seconds }, "targets": { "hosts": ["l1"] } });
    let (status, answer) = server.post("/api/templates", &body);
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["id"].as_i64().unwrap()
}

fn schedule(server: &Server, body: Value) -> Value {
    let (status, answer) = server.post("/api/schedules", &body);
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

fn fires(server: &Server, id: i64) -> Vec<Value> {
    let (status, list) = server.get(&format!("/api/schedules/{id}/fires?limit=1000"));
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

fn with_outcome<'a>(fires: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    fires.iter().filter(|f| f["outcome"] == outcome).collect()
}

/// Polls the fires until `check` holds.
fn wait_for_fires(
    server: &Server,
    id: i64,
    limit: Duration,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list = fires(server, id);
        if check(&list) {
            return list;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}: {list:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Each slot appears once, and each fired one started exactly one job, by the schedule.
fn assert_each_slot_once(server: &Server, list: &[Value], name: &str) {
    let slots: HashSet<i64> = list.iter().map(|f| f["slot"].as_i64().unwrap()).collect();
    assert_eq!(slots.len(), list.len(), "a slot recorded twice: {list:?}");
    let (_, jobs) = server.get(&format!("/api/jobs?limit=500&user=schedule:{name}"));
    let fired = with_outcome(list, "fired");
    let jobs = jobs.as_array().unwrap();
    let job_ids: HashSet<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    let fired_jobs: HashSet<i64> = fired.iter().map(|f| f["job"].as_i64().unwrap()).collect();
    assert!(fired_jobs.is_subset(&job_ids), "every fired slot names a job of the schedule");
    assert_eq!(fired_jobs.len(), fired.len(), "no job is named by two fires");
}

#[test]
fn a_two_second_schedule_fires_within_a_second_of_each_slot() {
    let server = server();
    let saved = template(&server, "tick", 0);
    let created = schedule(&server, json!({ "name": "every2", "template": saved, "cron": "*/2 * * * * *" }));
    let next = created["next"].as_array().unwrap();
    assert_eq!(next.len(), 5, "{created}");
    assert!(next.windows(2).all(|w| w[1].as_i64().unwrap() - w[0].as_i64().unwrap() == 2_000), "{created}");
    let id = created["id"].as_i64().unwrap();

    let list =
        wait_for_fires(&server, id, Duration::from_secs(15), "four fires", |l| with_outcome(l, "fired").len() >= 4);
    for fire in with_outcome(&list, "fired") {
        let slot = fire["slot"].as_i64().unwrap();
        assert_eq!(slot % 2_000, 0, "a slot is an even second: {fire}");
        let (_, job) = server.get(&format!("/api/jobs/{}", fire["job"]));
        let lag = job["created_at"].as_i64().unwrap() - slot;
        assert!((0..1_000).contains(&lag), "job created {lag} ms after its slot: {fire}");
        assert_eq!(job["created_by"], "schedule:every2");
        assert_eq!(job["template_id"], saved);
    }
    assert!(with_outcome(&list, "missed").is_empty(), "{list:?}");
    assert_each_slot_once(&server, &list, "every2");
}

#[test]
fn a_server_killed_and_restarted_never_fires_a_slot_twice_and_records_what_it_missed() {
    let mut server = server();
    let saved = template(&server, "tick", 0);
    let plain = schedule(&server, json!({ "name": "plain", "template": saved, "cron": "*/2 * * * * *" }))["id"]
        .as_i64()
        .unwrap();
    let caught =
        schedule(&server, json!({ "name": "caught", "template": saved, "cron": "*/2 * * * * *", "catch_up_secs": 60 }));
    let caught = caught["id"].as_i64().unwrap();
    wait_for_fires(&server, plain, Duration::from_secs(10), "a first fire", |l| !with_outcome(l, "fired").is_empty());

    server.kill();
    let down_from = now_ms();
    thread::sleep(Duration::from_secs(7));
    server.restart();
    let up_at = now_ms();

    let list = wait_for_fires(&server, plain, Duration::from_secs(10), "fires after the restart", |l| {
        with_outcome(l, "fired").iter().any(|f| f["slot"].as_i64().unwrap() > up_at)
    });
    let missed = with_outcome(&list, "missed");
    assert!(missed.len() >= 2, "the slots of 7 s down are missed: {list:?}");
    for fire in &missed {
        let slot = fire["slot"].as_i64().unwrap();
        assert!(slot > down_from - 2_000 && slot < up_at, "missed while down: {fire}");
        assert!(fire["reason"].as_str().unwrap().contains("not running"), "{fire}");
    }
    assert_each_slot_once(&server, &list, "plain");

    // With a catch-up window, the newest missed slot runs at start instead, saying so.
    let caught_list = fires(&server, caught);
    let catch_up: Vec<&Value> =
        caught_list.iter().filter(|f| f["reason"].as_str().is_some_and(|r| r.starts_with("caught up"))).collect();
    assert_eq!(catch_up.len(), 1, "{caught_list:?}");
    assert_eq!(catch_up[0]["outcome"], "fired", "{caught_list:?}");
    let caught_slot = catch_up[0]["slot"].as_i64().unwrap();
    assert!(with_outcome(&caught_list, "missed").iter().all(|f| f["slot"].as_i64().unwrap() < caught_slot));
    assert_each_slot_once(&server, &caught_list, "caught");
}

#[test]
fn a_disabled_schedule_never_fires_and_a_gone_module_fails_a_fire_without_stopping_the_scheduler() {
    let server = server();
    let saved = template(&server, "tick", 0);
    let off = schedule(&server, json!({ "name": "off", "template": saved, "cron": "* * * * * *", "enabled": false }));
    assert_eq!(off["next"], json!([]), "{off}");
    let on =
        schedule(&server, json!({ "name": "on", "template": saved, "cron": "* * * * * *" }))["id"].as_i64().unwrap();
    wait_for_fires(&server, on, Duration::from_secs(10), "a fire", |l| !with_outcome(l, "fired").is_empty());

    std::fs::remove_file(server.plugins_dir().join("Mid_9008.so")).unwrap();
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_none());
    let list = wait_for_fires(&server, on, Duration::from_secs(10), "two failed fires", |l| {
        with_outcome(l, "failed").len() >= 2
    });
    let failed = with_outcome(&list, "failed");
    assert!(failed[0]["reason"].as_str().unwrap().contains("Mid_9008 does not exist"), "{:?}", failed[0]);

    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    let newest_failed = failed.iter().map(|f| f["slot"].as_i64().unwrap()).max().unwrap();
    wait_for_fires(&server, on, Duration::from_secs(10), "fires again", |l| {
        with_outcome(l, "fired").iter().any(|f| f["slot"].as_i64().unwrap() > newest_failed)
    });
    assert!(fires(&server, off["id"].as_i64().unwrap()).is_empty(), "the disabled schedule never fired");

    // Enabling it counts from now: no slot before is missed.
    let mut body = json!({ "name": "off", "template": saved, "cron": "* * * * * *", "enabled": true });
    let path = format!("/api/schedules/{}", off["id"]);
    let (status, view) =
        server.send(server.client.put(format!("{}{path}", server.base)).bearer_auth(&server.token).json(&body));
    assert_eq!(status, StatusCode::OK, "{view}");
    let list =
        wait_for_fires(&server, off["id"].as_i64().unwrap(), Duration::from_secs(10), "a fire", |l| !l.is_empty());
    assert!(with_outcome(&list, "missed").is_empty(), "{list:?}");
    body["enabled"] = json!(false);
    server.send(server.client.put(format!("{}{path}", server.base)).bearer_auth(&server.token).json(&body));
}

#[test]
fn an_overlapping_fire_is_skipped_or_queued() {
    let server = server();
    let slow = template(&server, "slow", 3);
    let skip =
        schedule(&server, json!({ "name": "skip", "template": slow, "cron": "* * * * * *" }))["id"].as_i64().unwrap();
    let list = wait_for_fires(&server, skip, Duration::from_secs(15), "skipped fires", |l| {
        with_outcome(l, "skipped").len() >= 2
    });
    let skipped = with_outcome(&list, "skipped");
    assert!(skipped[0]["reason"].as_str().unwrap().contains("was still running"), "{:?}", skipped[0]);
    let (status, _) =
        server.send(server.client.delete(format!("{}/api/schedules/{skip}", server.base)).bearer_auth(&server.token));
    assert_eq!(status, StatusCode::NO_CONTENT);

    let other = template(&server, "slow too", 2);
    let queue =
        schedule(&server, json!({ "name": "queue", "template": other, "cron": "*/2 * * * * *", "overlap": "queue" }));
    let queue = queue["id"].as_i64().unwrap();
    let list = wait_for_fires(&server, queue, Duration::from_secs(20), "a fire that waited", |l| {
        l.iter()
            .any(|f| f["outcome"] == "fired" && f["recorded_at"].as_i64().unwrap() - f["slot"].as_i64().unwrap() > 500)
    });
    assert_each_slot_once(&server, &list, "queue");
    // Two runs of the saved job never overlap.
    let (_, jobs) = server.get("/api/jobs?user=schedule:queue&limit=100");
    let mut spans: Vec<(i64, i64)> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| Some((j["started_at"].as_i64()?, j["finished_at"].as_i64()?)))
        .collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[1].0 >= w[0].1), "runs overlapped: {spans:?}");
}

#[test]
fn bad_schedules_are_refused_naming_the_field() {
    let server = server();
    let saved = template(&server, "tick", 0);
    let good = json!({ "name": "nightly", "template": saved, "cron": "0 3 * * *", "timezone": "Europe/Paris" });
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    // 400: not what the document describes (a type or an enum); 422: read, but not valid.
    let (unreadable, invalid) = (StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY);
    for (body, field, expected) in [
        (with("cron", json!("61 * * * *")), "cron", invalid),
        (with("cron", json!("* * *")), "cron", invalid),
        (with("cron", json!("")), "cron", invalid),
        (with("timezone", json!("Mars/Base")), "timezone", invalid),
        (with("template", json!(999_999)), "template", invalid),
        (with("name", json!("")), "name", invalid),
        (with("overlap", json!("sometimes")), "overlap", unreadable),
        (with("catch_up_secs", json!(-1)), "catch_up_secs", unreadable),
        (with("catch_up_secs", json!(10_000_000)), "catch_up_secs", invalid),
    ] {
        let (status, answer) = server.post("/api/schedules", &body);
        assert_eq!((status, answer["field"].as_str()), (expected, Some(field)), "{body}: {answer}");
    }
    let created = schedule(&server, good.clone());
    let next: Vec<i64> = created["next"].as_array().unwrap().iter().map(|n| n.as_i64().unwrap()).collect();
    assert_eq!(next.len(), 5);
    // 03:00 in Paris is 01:00 or 02:00 UTC, one day apart.
    assert!(next.iter().all(|n| [1, 2].contains(&((n / 3_600_000) % 24))), "{next:?}");
    let (status, _) = server.post("/api/schedules", &good);
    assert_eq!(status, StatusCode::CONFLICT, "a taken name");
    // A saved job with a schedule stays until the schedule goes.
    let (status, answer) =
        server.send(server.client.delete(format!("{}/api/templates/{saved}", server.base)).bearer_auth(&server.token));
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, _) = server.get("/api/schedules/999999/fires");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = server.get(&format!("/api/schedules/{}/fires?limit=0", created["id"]));
    assert_eq!((status, answer["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("limit")));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
