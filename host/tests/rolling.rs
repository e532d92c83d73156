//! Rolling jobs, cancels that keep what finished, and re-runs, through the real server: on the local backend
//! (loopback hosts) for the rules, and on ssh, ansible and saltstack from the test environment for the shape
//! (hosts' own clocks show the batches one after another, never more than `batch` at once). The module is the
//! `fx_roll` fixture (9008): per host, its clock, a sleep, its clock again, exit 3 on the hosts named in `fail`.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{cli, fixture, install, testenv::testenv, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A server with `fx_roll` loaded, the backends in `extra_config`, and `hosts` (name, address) in its inventory.
fn server_with(extra_config: String, hosts: &[(String, String)]) -> Server {
    let server = Server::start_with(Options { extra_config, seed: vec![], ..Options::default() });
    install(&fixture("fx_roll"), &server.plugins_dir(), "Mid_9008.so");
    server.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    for (name, ip) in hosts {
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

/// `count` loopback hosts `l1`, `l2`… for the local backend.
fn loopback_hosts(count: usize) -> Vec<(String, String)> {
    (1..=count).map(|i| (format!("l{i}"), format!("127.0.0.{}", 100 + i))).collect()
}

fn names(hosts: &[(String, String)]) -> Vec<&str> {
    hosts.iter().map(|(name, _)| name.as_str()).collect()
}

fn submit(server: &Server, body: Value) -> i64 {
    let (status, answer) = server.post("/api/jobs", &body);
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["id"].as_i64().unwrap()
}

fn result<'a>(job: &'a Value, host: &str) -> &'a Value {
    job["results"].as_array().unwrap().iter().find(|r| r["host"] == host).unwrap_or_else(|| panic!("{host}: {job}"))
}

fn statuses(job: &Value) -> Vec<(String, String)> {
    let rows = job["results"].as_array().unwrap();
    rows.iter().map(|r| (r["host"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned())).collect()
}

/// Polls the job until `check` holds on its view.
fn wait_until(server: &Server, id: i64, limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, job) = server.get(&format!("/api/jobs/{id}"));
        if check(&job) {
            return job;
        }
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A host's run as its own clock saw it: (start, end) in nanoseconds, from fx_roll's two `date` lines.
fn span(job: &Value, host: &str) -> (u128, u128) {
    let out = result(job, host)["stdout"].as_str().unwrap_or_default().to_owned();
    let stamps: Vec<u128> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(stamps.len(), 2, "{host}: two timestamps expected in {out:?}");
    (stamps[0], stamps[1])
}

/// The most hosts whose spans overlap at any moment.
fn most_at_once(spans: &[(u128, u128)]) -> usize {
    spans.iter().map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count()).max().unwrap_or(0)
}

/// True while a process whose command line is exactly `sleep <seconds>` runs on this machine.
fn sleeping(seconds: u32) -> bool {
    let out = Command::new("pgrep").args(["-x", "-f", &format!("sleep {seconds}")]).output().expect("pgrep");
    out.status.success()
}

/// Waits (10 s at most) until no `sleep <seconds>` runs: a cancelled host's command must not outlive its job.
fn assert_gone(seconds: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleeping(seconds) {
        assert!(Instant::now() < deadline, "`sleep {seconds}` outlived its cancelled job");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rolling shape every backend must give: `hosts` in batches of `batch`, `fail` failing in one batch, and
/// `max_failed` passed there. Checks the batches ran one after another on the hosts' own clocks, at most
/// `batch` at once, that the failing batch was the last to run and the rest were skipped with the reason.
fn assert_rolls_and_stops(
    server: &Server,
    backend: &str,
    hosts: &[&str],
    batch: usize,
    max_failed: usize,
    fail: &[&str],
) {
    let body = json!({
        "module": 9008, "hosts": hosts, "backend": backend,
        "params": { "seconds": 1, "fail": fail.join(",") },
        "rollout": { "batch": batch, "max_failed": max_failed },
    });
    let id = submit(server, body);
    let job = server.wait_job(id, Duration::from_secs(240));
    let failing_batch = hosts.iter().position(|h| fail.contains(h)).unwrap() / batch;
    let ran = (failing_batch + 1) * batch;
    let reason =
        format!("failure threshold: {} of {} hosts not ok, at most {max_failed} allowed", fail.len(), hosts.len());
    assert_eq!(
        (job["status"].as_str(), job["error"].as_str()),
        (Some("failed"), Some(reason.as_str())),
        "{backend}: {job}"
    );

    let batches = job["batches"].as_array().unwrap();
    assert_eq!(batches.len(), failing_batch + 1, "{backend}: no batch starts after the threshold: {job}");
    let mut previous_end = 0;
    for (n, b) in batches.iter().enumerate() {
        let members: Vec<&str> = b["hosts"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
        assert_eq!(members, hosts[n * batch..(n + 1) * batch].to_vec(), "{backend}: batch {n} in the hosts' order");
        let spans: Vec<(u128, u128)> = members.iter().map(|h| span(&job, h)).collect();
        assert!(most_at_once(&spans) <= batch, "{backend}: batch {n} ran more than {batch} at once: {spans:?}");
        let first_start = spans.iter().map(|s| s.0).min().unwrap();
        assert!(first_start > previous_end, "{backend}: batch {n} started before batch {} ended", n.max(1) - 1);
        previous_end = spans.iter().map(|s| s.1).max().unwrap();
    }
    for (i, host) in hosts.iter().enumerate() {
        let row = result(&job, host);
        let want = if i >= ran {
            "skipped"
        } else if fail.contains(host) {
            "failed"
        } else {
            "ok"
        };
        assert_eq!(row["status"], want, "{backend}: {host}: {row}");
        if want == "skipped" {
            assert_eq!(row["stderr"].as_str(), Some(format!("not started: {reason}").as_str()), "{backend}: {row}");
        }
    }
    assert_eq!(job["rollout"], json!({ "batch": batch, "max_failed": max_failed, "pause_secs": 0 }), "{backend}");
}

#[test]
fn rolling_on_ssh_runs_batches_one_after_another_and_stops_past_the_threshold() {
    let env = testenv();
    let hosts: Vec<(String, String)> = (0..10).map(|i| (format!("s{}", i + 1), env.ssh.addresses[i].clone())).collect();
    let server = server_with(env.backends_config(), &hosts);
    // Two hosts fail in the second batch: 2 of 10 not ok, 1 allowed, so batches 3 and 4 never start.
    assert_rolls_and_stops(&server, "ssh", &names(&hosts), 3, 1, &["s5", "s6"]);
}

#[test]
fn rolling_on_ansible_and_saltstack_stops_the_same_way() {
    let env = testenv();
    let mut hosts: Vec<(String, String)> =
        (0..4).map(|i| (format!("a{}", i + 1), env.ssh.addresses[20 + i].clone())).collect();
    hosts.extend([("m1".to_owned(), "127.0.0.90".to_owned()), ("m2".to_owned(), "127.0.0.91".to_owned())]);
    let server = server_with(env.backends_config(), &hosts);
    assert_rolls_and_stops(&server, "ansible", &["a1", "a2", "a3", "a4"], 2, 0, &["a2"]);
    // Two running minions: one at a time, the first fails, the second never starts.
    assert_rolls_and_stops(&server, "saltstack", &["m1", "m2"], 1, 0, &["m1"]);
}

#[test]
fn cancelling_in_the_second_batch_keeps_the_first_and_stops_the_rest() {
    let env = testenv();
    let hosts: Vec<(String, String)> =
        (0..7).map(|i| (format!("c{}", i + 1), env.ssh.addresses[30 + i].clone())).collect();
    let server = server_with(env.backends_config(), &hosts);
    let body = json!({
        "module": 9008, "hosts": names(&hosts), "backend": "ssh",
        "params": { "seconds": 0, "slow": "c4,c5,c6", "slow_seconds": 6013 },
        "rollout": { "batch": 3 },
    });
    let id = submit(&server, body);
    let running = wait_until(&server, id, Duration::from_secs(60), "the second batch", |job| {
        job["batches"].as_array().is_some_and(|b| b.len() == 2) && sleeping(6013)
    });
    let first: Vec<Value> = ["c1", "c2", "c3"].iter().map(|h| result(&running, h).clone()).collect();
    let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = server.wait_job(id, Duration::from_secs(30));
    assert_eq!(job["status"], "cancelled", "{job}");

    for (host, before) in ["c1", "c2", "c3"].iter().zip(&first) {
        assert_eq!(result(&job, host), before, "the first batch's result is kept exactly");
        assert_eq!((before["status"].as_str(), before["rc"].as_i64()), (Some("ok"), Some(0)), "{before}");
    }
    for host in ["c4", "c5", "c6"] {
        let row = result(&job, host);
        assert_eq!((row["status"].as_str(), row["stderr"].as_str()), (Some("cancelled"), Some("cancelled")), "{row}");
        assert!(row["duration_ms"].as_i64().unwrap() > 0, "how long it ran: {row}");
    }
    let row = result(&job, "c7");
    assert_eq!((row["status"].as_str(), row["stderr"].as_str()), (Some("skipped"), Some("not started: cancelled")));
    assert_gone(6013);
    let finished: Vec<bool> =
        job["batches"].as_array().unwrap().iter().map(|b| b["finished_at"].as_i64().is_some()).collect();
    assert_eq!(finished, [true, true], "both batches that ran are closed: {job}");
}

#[test]
fn a_plain_job_cancelled_with_three_of_four_done_keeps_those_three() {
    let hosts = loopback_hosts(4);
    let server = server_with(String::new(), &hosts);
    let body = json!({ "module": 9008, "hosts": names(&hosts), "params": { "seconds": 0, "slow": "l4", "slow_seconds": 6014 } });
    let id = submit(&server, body);
    let running = wait_until(&server, id, Duration::from_secs(30), "three hosts done", |job| {
        job["results"].as_array().is_some_and(|r| r.iter().filter(|r| r["status"] == "ok").count() == 3)
    });
    let (status, body) = server.post(&format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = server.wait_job(id, Duration::from_secs(30));
    assert_eq!((job["status"].as_str(), job["error"].as_str()), (Some("cancelled"), Some("cancelled")), "{job}");
    for host in ["l1", "l2", "l3"] {
        assert_eq!(result(&job, host), result(&running, host), "{host}'s result is kept as it was");
        span(&job, host);
    }
    assert_eq!(result(&job, "l4")["status"], "cancelled", "{job}");
    assert_gone(6014);

    // The stream of a finished job replays the same final statuses.
    let events = server.job_events(id).until_end(Duration::from_secs(10));
    let end = events.last().unwrap();
    assert_eq!(statuses(&end.data), statuses(&job));
}

#[test]
fn percentages_split_and_bad_rollouts_are_refused_naming_the_field() {
    let hosts = loopback_hosts(5);
    let server = server_with(String::new(), &hosts);
    let body =
        json!({ "module": 9008, "hosts": names(&hosts), "params": { "seconds": 0 }, "rollout": { "batch": "50%" } });
    let job = server.wait_job(submit(&server, body), Duration::from_secs(30));
    assert_eq!(job["status"], "succeeded", "{job}");
    let sizes: Vec<usize> =
        job["batches"].as_array().unwrap().iter().map(|b| b["hosts"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [3, 2], "50% of 5 rounds up: {job}");

    for (rollout, field) in [
        (json!({ "batch": 0 }), "rollout.batch"),
        (json!({ "batch": "150%" }), "rollout.batch"),
        (json!({ "batch": "0%" }), "rollout.batch"),
        (json!({ "batch": "many" }), "rollout.batch"),
        (json!({ "batch": 2, "max_failed": -1 }), "rollout.max_failed"),
        (json!({ "batch": 2, "pause_secs": 100_000 }), "rollout.pause_secs"),
        (json!({ "batch": 2, "serial": 1 }), "rollout.serial"),
    ] {
        let body = json!({ "module": 9008, "hosts": ["l1"], "rollout": rollout });
        let (status, answer) = server.post("/api/jobs", &body);
        // A field the document does not have cannot be read (400); the rest are read and refused (422).
        let expected =
            if field == "rollout.serial" { StatusCode::BAD_REQUEST } else { StatusCode::UNPROCESSABLE_ENTITY };
        assert_eq!((status, answer["field"].as_str()), (expected, Some(field)), "{rollout}: {answer}");
    }
    // Nothing was queued by the refused requests.
    let (_, history) = server.get("/api/jobs");
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
}

#[test]
fn a_threshold_of_zero_stops_at_the_first_failure_and_a_rerun_takes_exactly_the_hosts_not_ok() {
    let hosts = loopback_hosts(6);
    let server = server_with(String::new(), &hosts);
    let body = json!({
        "module": 9008, "hosts": names(&hosts), "params": { "seconds": 0, "fail": "l3" },
        "rollout": { "batch": 2, "max_failed": 0, "pause_secs": 1 },
    });
    let started = Instant::now();
    let origin = server.wait_job(submit(&server, body), Duration::from_secs(30));
    assert!(started.elapsed() >= Duration::from_secs(1), "one pause between the two batches that ran");
    let want = [("l1", "ok"), ("l2", "ok"), ("l3", "failed"), ("l4", "ok"), ("l5", "skipped"), ("l6", "skipped")];
    let want: Vec<(String, String)> = want.iter().map(|(h, s)| (h.to_string(), s.to_string())).collect();
    assert_eq!(statuses(&origin), want, "{origin}");
    let origin_id = origin["id"].as_i64().unwrap();

    let (status, body) = server.post(&format!("/api/jobs/{origin_id}/rerun"), &json!({ "hosts": "not_ok" }));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let rerun = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(30));
    assert_eq!(rerun["hosts"], json!(["l3", "l5", "l6"]), "exactly the hosts not ok, in order: {rerun}");
    assert_eq!(rerun["rerun_of"], origin_id);
    assert_eq!(rerun["params"], origin["params"]);
    assert_eq!(rerun["rollout"], origin["rollout"]);
    // l3 still fails: the threshold stops the re-run after its first batch (l3, l5), l6 is skipped.
    assert_eq!(rerun["status"], "failed", "{rerun}");
    let (_, origin_now) = server.get(&format!("/api/jobs/{origin_id}"));
    assert_eq!(origin_now["reruns"], json!([rerun["id"]]), "the origin links to its re-run");

    let (status, body) = server.post(&format!("/api/jobs/{origin_id}/rerun"), &json!({ "hosts": "all" }));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let all = server.wait_job(body["id"].as_i64().unwrap(), Duration::from_secs(30));
    assert_eq!(all["hosts"], origin["hosts"]);

    // Refusals: a job with every host ok, a running job, an unknown job, a bad choice.
    let ok = server.wait_job(
        submit(&server, json!({ "module": 9008, "hosts": ["l1"], "params": { "seconds": 0 } })),
        Duration::from_secs(30),
    );
    let (status, body) = server.post(&format!("/api/jobs/{}/rerun", ok["id"]), &json!({ "hosts": "not_ok" }));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let long = submit(&server, json!({ "module": 9008, "hosts": ["l1"], "params": { "seconds": 30 } }));
    let (status, body) = server.post(&format!("/api/jobs/{long}/rerun"), &json!({ "hosts": "all" }));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    server.post(&format!("/api/jobs/{long}/cancel"), &json!({}));
    let (status, _) = server.post("/api/jobs/999999/rerun", &json!({ "hosts": "all" }));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server.post(&format!("/api/jobs/{origin_id}/rerun"), &json!({ "hosts": "failed" }));
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("hosts")), "{body}");
}

#[test]
fn the_cli_rolls_out_and_prints_skipped_hosts() {
    let hosts = loopback_hosts(3);
    let server = server_with(String::new(), &hosts);
    let out = cli(
        &server,
        &[
            "run",
            "--module",
            "9008",
            "--host",
            "l1",
            "--host",
            "l2",
            "--host",
            "l3",
            "--param",
            "seconds=0",
            "--param",
            "fail=l1",
            "--batch",
            "1",
            "--max-failed",
            "0",
        ],
    );
    assert!(!out.status.success(), "a failed job exits non-zero: {}", out.stdout);
    assert!(out.stdout.contains("host: l1\nstatus: failed (rc 3)"), "{}", out.stdout);
    assert!(out.stdout.contains("host: l3\nstatus: skipped"), "{}", out.stdout);
    assert!(out.stderr.contains("failure threshold: 1 of 3 hosts not ok, at most 0 allowed"), "{}", out.stderr);
    let out = cli(&server, &["run", "--module", "9008", "--host", "l1", "--batch", "150%"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("rollout.batch"), "{}", out.stderr);
}
