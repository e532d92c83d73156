//! Servers of one database: each joins under its `node_name`, is listed by `GET /api/cluster` with its heartbeat
//! and running jobs, and leaves the list when it stops. PostgreSQL is shared by several servers; a second server
//! on one SQLite file or one MariaDB database refuses to start, as does a second server under a taken name. A
//! server restarting fails only its own unfinished jobs. Real databases: SQLite files, the MariaDB and PostgreSQL
//! servers of the machine (a fresh database each).

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{cluster::SECRET, database::block_on, fixture, install, scratch::Scratch, Options, Server};
use omserver::store::Dialect;
use serde_json::{json, Value};

/// [`common::cluster::node`] with nothing more configured.
fn node(database_url: &str, name: &str, token: Option<&str>) -> Server {
    common::cluster::node(database_url, name, token, "")
}

/// Starts `omserver serve` on `config` and expects it to refuse: returns what it printed on stderr.
fn refused(config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omserver"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "warn")
        .env_remove("AUTO_PLATFORM")
        .env_remove("SECRET_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start omserver");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a second server on the same database started (still running after 30 s)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "it must exit with an error; stderr:\n{stderr}");
    stderr
}

/// A configuration beside `server`'s: the same database and key, its own state, port 0, another name.
fn second_config(server: &Server, database_url: &str, name: &str) -> std::path::PathBuf {
    let dir = server.dir.path().join(format!("second-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\nplugins_dir = \"{0}/plugins.d\"\n\
         state_dir = \"{0}/state\"\nfiles_dir = \"{0}/files\"\nnode_name = \"{name}\"\nsecret_key = \"{SECRET}\"\n",
        dir.display()
    );
    let path = dir.join("omserver.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn servers(server: &Server, token: &str) -> Vec<Value> {
    let (status, body) = server.send(server.client.get(format!("{}/api/cluster", server.base)).bearer_auth(token));
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("a list").clone()
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|s| s["name"] == name)
}

fn job_status(server: &Server, token: &str, id: i64) -> String {
    let (status, body) = server.send(server.client.get(format!("{}/api/jobs/{id}", server.base)).bearer_auth(token));
    assert_eq!(status, 200, "{body}");
    body["status"].as_str().unwrap_or_default().to_owned()
}

fn submit_sleep(server: &Server, token: &str, seconds: i64) -> i64 {
    let body = json!({ "module": 9003, "hosts": ["localhost"], "params": { "seconds": seconds } });
    let (status, job) =
        server.send(server.client.post(format!("{}/api/jobs", server.base)).bearer_auth(token).json(&body));
    assert_eq!(status, 202, "{job}");
    job["id"].as_i64().expect("job id")
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_lone_server_lists_itself_and_a_second_one_on_its_sqlite_file_refuses_to_start() {
    let server = Server::start_with(Options {
        seed: vec![],
        extra_config: "node_name = \"solo-1\"".into(),
        ..Options::default()
    });
    let list = servers(&server, &server.token);
    assert_eq!(list.len(), 1, "{list:?}");
    let me = &list[0];
    assert_eq!(
        (me["name"].as_str(), me["this"].as_bool(), me["up"].as_bool()),
        (Some("solo-1"), Some(true), Some(true))
    );
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(me["address"], server.base.as_str(), "the listen address when node_address is unset");
    assert!(me["last_seen_at"].as_i64() >= me["started_at"].as_i64(), "{me}");

    let url = format!("sqlite://{}", server.dir.path().join("omserver.db").display());
    let stderr = refused(&second_config(&server, &url, "solo-2"));
    assert!(stderr.contains("another omserver serves") && stderr.contains("only PostgreSQL"), "{stderr}");
    // The refused process changed nothing: still one server, still up.
    assert_eq!(servers(&server, &server.token).len(), 1);
}

#[test]
fn a_second_server_on_one_mariadb_database_refuses_to_start() {
    let scratch = block_on(Scratch::create(Dialect::MySql));
    let server = node(&scratch.url, "maria-1", None);
    let stderr = refused(&second_config(&server, &scratch.url, "maria-2"));
    assert!(stderr.contains("another omserver serves this MariaDB/MySQL database"), "{stderr}");
    assert_eq!(servers(&server, &server.token).len(), 1);
    drop(server);
    block_on(scratch.drop_database());
}

#[test]
fn servers_on_one_postgresql_list_each_other_and_a_restart_fails_only_its_own_jobs() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    // One slot each: two jobs run on two servers.
    let alpha = common::cluster::node(&scratch.url, "alpha", None, "max_concurrent_jobs = 1");
    let token = alpha.token.clone();
    let beta = common::cluster::node(&scratch.url, "beta", Some(&token), "max_concurrent_jobs = 1");

    // Each lists both; `this` is the one that answered.
    for (server, me) in [(&alpha, "alpha"), (&beta, "beta")] {
        let list = servers(server, &token);
        let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, ["alpha", "beta"], "{list:?}");
        for s in &list {
            assert_eq!(s["this"].as_bool(), Some(s["name"] == me), "{s}");
            assert_eq!(s["up"].as_bool(), Some(true), "{s}");
        }
    }

    // A third server may not take a name that is taken.
    let stderr = refused(&second_config(&alpha, &scratch.url, "alpha"));
    assert!(stderr.contains("another server runs as alpha"), "{stderr}");

    // A job on each; each server's list shows what it runs.
    let first = submit_sleep(&alpha, &token, 37);
    wait_until("the first job runs", Duration::from_secs(20), || running_on(&alpha, &token, first).is_some());
    let x_name = running_on(&alpha, &token, first).unwrap();
    let (mut x, y) = if x_name == "alpha" { (alpha, beta) } else { (beta, alpha) };
    let second = submit_sleep(&y, &token, 41);
    wait_until("the second job runs", Duration::from_secs(20), || job_status(&y, &token, second) == "running");
    let y_name = if x_name == "alpha" { "beta" } else { "alpha" };
    wait_until("the list shows the running jobs", Duration::from_secs(10), || {
        let list = servers(&y, &token);
        named(&list, &x_name).is_some_and(|s| s["jobs"] == json!([first]) && s["running_jobs"] == 1)
            && named(&list, y_name).is_some_and(|s| s["jobs"] == json!([second]) && s["running_jobs"] == 1)
    });

    // x crashes and comes back: its own job failed as interrupted, y's runs on.
    x.restart();
    let job = x.get(&format!("/api/jobs/{first}")).1;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().is_some_and(|e| e.contains("interrupted")), "{job}");
    assert_eq!(job_status(&y, &token, second), "running", "another server's job is not the restarted one's");
    let list = servers(&x, &token);
    assert_eq!(named(&list, &x_name).map(|s| s["this"].clone()), Some(json!(true)), "{list:?}");

    // y stops cleanly: it leaves the list (its job is cancelled first, so the stop is quick).
    let (status, _) = y.send(y.client.post(format!("{}/api/jobs/{second}/cancel", y.base)).bearer_auth(&token));
    assert_eq!(status, 200);
    let mut y = y;
    assert!(y.terminate(Duration::from_secs(30)).is_some(), "{y_name} stops on SIGTERM");
    let list = servers(&x, &token);
    assert!(named(&list, y_name).is_none(), "a server that stopped cleanly leaves the list: {list:?}");
    drop((x, y));
    block_on(scratch.drop_database());
}

#[test]
fn a_database_migrated_by_a_newer_omserver_is_refused_with_what_to_do() {
    let mut server = Server::start_with(Options { seed: vec![], ..Options::default() });
    server.kill();
    common::database::db_exec(
        &server,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, X'00', 0)",
    );
    let stderr = refused(&server.config_path());
    assert!(stderr.contains("the database has migration 9999, which this omserver does not know"), "{stderr}");
}

#[test]
fn a_killed_servers_running_job_is_ended_by_another_within_the_lease_with_its_hosts_lost() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let alpha = node(&scratch.url, "alpha", None);
    let token = alpha.token.clone();
    let beta = node(&scratch.url, "beta", Some(&token));
    let job = submit_sleep(&alpha, &token, 43);
    wait_until("the job runs", Duration::from_secs(20), || running_on(&alpha, &token, job).is_some());
    // Whichever server took it is the one killed.
    let gone_name = running_on(&alpha, &token, job).unwrap();
    let (mut gone, other) = if gone_name == "alpha" { (alpha, beta) } else { (beta, alpha) };

    let killed = Instant::now();
    gone.kill();
    // 15 s without a new heartbeat as the other sees it, then its next heartbeat (every 5 s) ends the job.
    wait_until("the other server ends the job", Duration::from_secs(40), || {
        job_status(&other, &token, job) != "running"
    });
    let took = killed.elapsed();
    let (_, ended) = other.send(other.client.get(format!("{}/api/jobs/{job}", other.base)).bearer_auth(&token));
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["error"], format!("server {gone_name} stopped answering"), "{ended}");
    let results: Vec<(String, String)> = ended["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["host"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(results, [("localhost".to_owned(), "lost".to_owned())], "{ended}");
    // The lease runs from the killed server's last heartbeat, up to 5 s before the kill.
    assert!(took >= Duration::from_secs(10), "not before the lease: {took:?}");
    println!("{gone_name}'s job ended by the other server {took:?} after the kill");
    let list = servers(&other, &token);
    assert_eq!(named(&list, &gone_name).map(|s| s["up"].clone()), Some(json!(false)), "{list:?}");

    // Re-running the hosts not ok is one call, on any server.
    let (status, rerun) = other.send(
        other
            .client
            .post(format!("{}/api/jobs/{job}/rerun", other.base))
            .bearer_auth(&token)
            .json(&json!({ "hosts": "not_ok" })),
    );
    assert!(status.is_success(), "{status}: {rerun}");
    drop((gone, other));
    block_on(scratch.drop_database());
}

/// A job page and a cancel on the server that does not run the job: beta, the only server with fx_roll (as
/// `GET /api/modules` says), runs a job on four loopback hosts, three of which finish after a second while the
/// fourth sleeps on. alpha's event stream shows each host as it finishes
/// (within 250 ms of beta's own stream), and a cancel asked of alpha stops the job on beta.
#[test]
fn a_job_page_and_a_cancel_on_another_server_reach_the_job_where_it_runs() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let alpha = node(&scratch.url, "alpha", None);
    let token = alpha.token.clone();
    let beta = node(&scratch.url, "beta", Some(&token));
    install(&fixture("fx_roll"), &beta.plugins_dir(), "Mid_9008.so");
    beta.wait_for_module("Mid_9008.so", Duration::from_secs(10), |m| m.is_some_and(|m| m["status"] == "loaded"));
    // Each module says which servers serve it: fx_roll only beta (so only beta takes its jobs), fx_sleep both.
    wait_until("both servers' modules are recorded", Duration::from_secs(15), || {
        let (_, modules) = beta.send(beta.client.get(format!("{}/api/modules", beta.base)).bearer_auth(&token));
        let servers = |file: &str| {
            let module = modules.as_array().unwrap().iter().find(|m| m["file"] == file).cloned();
            module.map(|m| m["servers"].clone()).unwrap_or_default()
        };
        servers("Mid_9008.so") == json!(["beta"]) && servers("Mid_9003.so") == json!(["alpha", "beta"])
    });
    let hosts = ["l1", "l2", "l3", "l4"];
    for (i, name) in hosts.iter().enumerate() {
        let body = json!({ "name": name, "ip": format!("127.0.0.{}", 101 + i) });
        let (status, row) =
            alpha.send(alpha.client.post(format!("{}/api/hosts", alpha.base)).bearer_auth(&token).json(&body));
        assert_eq!(status, 201, "{row}");
    }
    let body = json!({ "module": 9008, "hosts": hosts, "params": { "seconds": 1, "slow": "l4", "slow_seconds": 900 } });
    let (status, job) = beta.send(beta.client.post(format!("{}/api/jobs", beta.base)).bearer_auth(&token).json(&body));
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_i64().unwrap();
    let here = beta.job_events(id);
    let there = alpha.job_events(id);

    // The three quick hosts, on both streams.
    let hosts_of = |reader: &common::EventReader| -> Vec<common::JobEventSeen> {
        (0..3).map(|_| reader.next(Duration::from_secs(20)).expect("a host event within 20 s")).collect()
    };
    let (on_beta, on_alpha) = (hosts_of(&here), hosts_of(&there));
    let mut lags = Vec::new();
    for seen in &on_alpha {
        assert_eq!((seen.event.as_str(), seen.data["status"].as_str()), ("host", Some("ok")), "{seen:?}");
        let host = seen.data["host"].as_str().unwrap();
        let local = on_beta.iter().find(|e| e.data["host"] == host).unwrap_or_else(|| panic!("{host} on beta"));
        lags.push(seen.at.saturating_sub(local.at));
    }
    println!("host events on the other server came {lags:?} after the running server's own stream");
    assert!(lags.iter().all(|lag| *lag <= Duration::from_millis(250)), "{lags:?}");
    // The job as alpha shows it (`GET /api/jobs/{id}`): the three quick hosts reported on beta, while l4 runs.
    let (status, view) = alpha.send(alpha.client.get(format!("{}/api/jobs/{id}", alpha.base)).bearer_auth(&token));
    assert_eq!(status, 200, "{view}");
    let mut reported: Vec<(&str, &str)> = view["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["host"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    reported.sort_unstable();
    assert_eq!((view["status"].as_str(), reported), (Some("running"), vec![("l1", "ok"), ("l2", "ok"), ("l3", "ok")]));

    // Cancelled through alpha: the job on beta stops, and alpha's stream ends with it.
    let (status, answer) =
        alpha.send(alpha.client.post(format!("{}/api/jobs/{id}/cancel", alpha.base)).bearer_auth(&token));
    assert_eq!(status, 200, "{answer}");
    let rest = there.until_end(Duration::from_secs(30));
    let last = rest.last().unwrap();
    assert_eq!(last.data["status"], "cancelled", "{rest:?}");
    let l4 = last.data["results"].as_array().unwrap().iter().find(|r| r["host"] == "l4").cloned();
    assert_eq!(l4.map(|r| r["status"].clone()), Some(json!("cancelled")), "{last:?}");
    assert_eq!(job_status(&beta, &token, id), "cancelled");
    drop((alpha, beta));
    block_on(scratch.drop_database());
}

/// Which server runs job `id` now, by the cluster's list (`None` while no server runs it).
fn running_on(server: &Server, token: &str, id: i64) -> Option<String> {
    servers(server, token)
        .iter()
        .find(|s| s["jobs"].as_array().is_some_and(|jobs| jobs.contains(&json!(id))))
        .map(|s| s["name"].as_str().unwrap().to_owned())
}

/// A job queued behind a busy slot starts as soon as the slot is free, not at the next look at the queue (every
/// 2 s, for a signal lost): four jobs through one slot, each started within a second of the previous one's end.
#[test]
fn a_queued_job_starts_as_soon_as_a_slot_is_free() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let server = common::cluster::node(&scratch.url, "alpha", None, "max_concurrent_jobs = 1");
    let token = server.token.clone();
    let jobs: Vec<i64> = [1, 0, 0, 0].into_iter().map(|seconds| submit_sleep(&server, &token, seconds)).collect();
    let views: Vec<Value> = jobs.iter().map(|id| server.wait_job(*id, Duration::from_secs(30))).collect();
    for pair in views.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        assert_eq!(after["status"], "succeeded", "{after}");
        let waited = after["started_at"].as_i64().unwrap() - before["finished_at"].as_i64().unwrap();
        assert!(waited < 1_000, "job {} started {waited} ms after job {} ended", after["id"], before["id"]);
    }
    drop(server);
    block_on(scratch.drop_database());
}

/// Two servers with one slot each. A job accepted by a server whose slot is taken runs on the other; one that
/// finds no free slot waits queued, outlives the server that accepted it (SIGKILLed), and runs on the other once
/// its slot is free. A cancel of a queued job no server has taken ends it on the server asked.
#[test]
fn queued_jobs_run_on_whichever_server_has_a_free_slot_and_outlive_the_one_that_accepted_them() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let alpha = common::cluster::node(&scratch.url, "alpha", None, "max_concurrent_jobs = 1");
    let token = alpha.token.clone();
    let beta = common::cluster::node(&scratch.url, "beta", Some(&token), "max_concurrent_jobs = 1");

    // The first job runs on one of them: x.
    let first = submit_sleep(&alpha, &token, 601);
    wait_until("the first job runs", Duration::from_secs(20), || running_on(&alpha, &token, first).is_some());
    let x_name = running_on(&alpha, &token, first).unwrap();
    let (mut x, y) = if x_name == "alpha" { (alpha, beta) } else { (beta, alpha) };

    // Accepted by x, whose slot is taken: y runs it.
    let second = submit_sleep(&x, &token, 602);
    wait_until("the second job runs", Duration::from_secs(20), || running_on(&x, &token, second).is_some());
    let on = running_on(&x, &token, second).unwrap();
    assert_ne!(on, x_name, "the job waited for x's slot instead of running on the free server");

    // No slot free anywhere: it waits, queued, taken by no one.
    let third = submit_sleep(&x, &token, 1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job_status(&y, &token, third), "queued");

    // A cancel of a queued job nobody took ends it where it is asked.
    let fourth = submit_sleep(&y, &token, 1);
    let (status, answer) = x.send(x.client.post(format!("{}/api/jobs/{fourth}/cancel", x.base)).bearer_auth(&token));
    assert_eq!(status, 200, "{answer}");
    let (_, cancelled) = y.send(y.client.get(format!("{}/api/jobs/{fourth}", y.base)).bearer_auth(&token));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["results"][0]["status"], "skipped", "its host never started: {cancelled}");

    // The server that accepted the third job dies; once y's slot is free, y runs it.
    x.kill();
    let (status, answer) = y.send(y.client.post(format!("{}/api/jobs/{second}/cancel", y.base)).bearer_auth(&token));
    assert_eq!(status, 200, "{answer}");
    wait_until("the queued job ran on the live server", Duration::from_secs(30), || {
        job_status(&y, &token, third) == "succeeded"
    });
    // The dead server's running job is ended for it, its host lost.
    wait_until("x's running job is ended", Duration::from_secs(40), || job_status(&y, &token, first) == "failed");
    drop((x, y));
    block_on(scratch.drop_database());
}

fn post(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let (status, answer) =
        server.send(server.client.post(format!("{}{path}", server.base)).bearer_auth(token).json(&body));
    assert!(status.is_success(), "POST {path}: {status} {answer}");
    answer
}

/// The jobs the receiver was told of, in the order it was told.
fn notified_jobs(receiver: &common::receiver::Receiver) -> Vec<i64> {
    receiver.received().iter().filter_map(|r| r.json()["data"]["job"].as_i64()).collect()
}

#[test]
fn one_server_sends_each_notification_and_another_takes_over_when_it_dies() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let mut alpha = node(&scratch.url, "alpha", None);
    let token = alpha.token.clone();
    let beta = node(&scratch.url, "beta", Some(&token));
    let receiver = common::receiver::Receiver::start(&[200]);
    let channel =
        post(&alpha, &token, "/api/notify/channels", json!({ "name": "hook", "kind": "webhook", "url": receiver.url }));
    post(&beta, &token, "/api/notify/subscriptions", json!({ "channel": channel["id"], "event": "job.finished" }));

    // Jobs end on both servers; each is told once, by whichever server leads the notifier.
    let mut jobs = Vec::new();
    for server in [&alpha, &beta, &alpha, &beta] {
        jobs.push(submit_sleep(server, &token, 0));
    }
    receiver.wait_for(Duration::from_secs(30), "four notifications", |r| r.len() >= 4);
    std::thread::sleep(Duration::from_secs(3));
    let mut told = notified_jobs(&receiver);
    told.sort_unstable();
    assert_eq!(told, jobs, "each job once");

    // Audit events matching an alert rule: each counted once into its storm group, though both servers follow the
    // audit log. (One server ingests them: two writers of one host's chain are the cluster's next step.)
    post(&alpha, &token, "/api/audit/rules", json!({ "name": "storm", "pattern": "^storm " }));
    // A window of 1 s: matches counted after the first message was sent go into the next one, a second later.
    post(
        &beta,
        &token,
        "/api/notify/subscriptions",
        json!({ "channel": channel["id"], "event": "audit.alert", "filter": { "window_secs": 1 } }),
    );
    let agent = common::cli(&alpha, &["hosts", "token", "localhost"]);
    assert!(agent.status.success(), "{agent:?}");
    let agent = agent.stdout.trim().to_owned();
    for seq in 1..=30i64 {
        let event = json!({ "stream": "s", "seq": seq, "history_id": seq, "user": "root", "login_user": "", "uid": 0,
                            "tty": "/dev/pts/1", "ip": "127.0.0.1", "time": "2026-12-05 10:00:00",
                            "command": format!("storm {seq}") });
        post(&alpha, &agent, "/api/audit/events", json!({ "events": [event] }));
    }
    let alerts = |r: &[common::receiver::Received]| {
        r.iter()
            .filter(|m| m.json()["event"] == "audit.alert")
            .map(|m| m.json()["count"].as_i64().unwrap())
            .sum::<i64>()
    };
    receiver.wait_for(Duration::from_secs(30), "30 alerts counted", |r| alerts(r) >= 30);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(alerts(&receiver.received()), 30, "each match counted once");
    let before = receiver.received().len();

    // The leader (the first server: it asked first) dies; the other takes the notifier over.
    alpha.kill();
    let later = submit_sleep(&beta, &token, 0);
    let took = Instant::now();
    receiver.wait_for(Duration::from_secs(30), "the job after the kill", |r| r.len() > before);
    println!("notified {:?} after the leader was killed", took.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(notified_jobs(&receiver).iter().filter(|j| **j == later).count(), 1);
    assert_eq!(receiver.received().len(), before + 1, "nothing twice");
    drop((alpha, beta));
    block_on(scratch.drop_database());
}

/// How many sessions hold the lock of the work `work` that one server does at a time (`cluster::lead`): the key
/// is the first 8 bytes of SHA-256 of `omserver work <work>`, which PostgreSQL shows split in two 32-bit halves.
fn leaders(url: &str, work: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("omserver work {work}").as_bytes());
    let key = i64::from_be_bytes(digest[..8].try_into().unwrap());
    block_on(async {
        let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1 AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(key)
        .fetch_one(&mut db)
        .await
        .unwrap()
    })
}

/// Stored audit rows the command index has not taken yet.
fn index_lag(url: &str) -> i64 {
    block_on(async {
        let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM server_history WHERE id > (SELECT position FROM audit_text_position)")
            .fetch_one(&mut db)
            .await
            .unwrap()
    })
}

#[test]
fn one_server_keeps_the_command_index_for_every_servers_rows_and_another_takes_over_when_it_dies() {
    let scratch = block_on(Scratch::create(Dialect::Postgres));
    let mut alpha = node(&scratch.url, "alpha", None);
    let token = alpha.token.clone();
    let beta = node(&scratch.url, "beta", Some(&token));
    let agent = common::cli(&alpha, &["hosts", "token", "localhost"]);
    assert!(agent.status.success(), "{agent:?}");
    let agent = agent.stdout.trim().to_owned();
    let send = |server: &Server, from: i64| {
        let events: Vec<Value> = (from..from + 200)
            .map(|seq| {
                json!({ "stream": "s", "seq": seq, "history_id": seq, "user": "root",
                        "time": "2026-12-05 10:00:00", "command": format!("systemctl restart unit{seq}") })
            })
            .collect();
        post(server, &agent, "/api/audit/events", json!({ "events": events }));
    };

    // Both write; one indexes every row (the other's as well), and one only.
    send(&alpha, 1);
    send(&beta, 201);
    wait_until("the index has every server's rows", Duration::from_secs(15), || index_lag(&scratch.url) == 0);
    assert_eq!(leaders(&scratch.url, "audit-index"), 1, "one server keeps the index");

    // Its keeper dies (the first server: it asked first); the other takes the index over.
    alpha.kill();
    send(&beta, 401);
    wait_until("the index taken over", Duration::from_secs(30), || index_lag(&scratch.url) == 0);
    assert_eq!(leaders(&scratch.url, "audit-index"), 1);
    let (status, found) = beta.send(
        beta.client.get(format!("{}/api/audit/events?q=restart%20unit450&limit=10", beta.base)).bearer_auth(&token),
    );
    assert_eq!(status, 200, "{found}");
    // Answered by the index (a search of rows it has not taken reads a window and says which).
    assert_eq!((found["events"].as_array().map(Vec::len), &found["scanned"]), (Some(1), &Value::Null), "{found}");
    drop((alpha, beta));
    block_on(scratch.drop_database());
}
