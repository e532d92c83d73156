//! Seed modules 1001, 1002 and 1004 with no `[modules.*]` settings (issue 15, item 8): each host is asked through
//! the backend which log or program it has, the first of a short list is used, and the output says which. Run on
//! the testenv's Debian hosts over ssh (127.0.0.2… are this machine's sshd) and on the local backend.
//!
//! The expected source is worked out here from this machine's files in the same order as the modules' lists, so
//! the test holds on Red Hat (`/var/log/messages`, `/var/log/secure`, lsmod) as on this Debian image (only the
//! journal, wtmp and no lsmod).

mod common;

use std::{path::Path, time::Duration};

use common::{testenv::testenv, Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SEEDS: &[u32] = &[1001, 1002, 1004];

fn server() -> Server {
    let env = testenv();
    assert!(!env.ssh.addresses.is_empty(), "sshd is not up: run `cargo xtask testenv up ssh`");
    let server =
        Server::start_with(Options { extra_config: env.backends_config(), seed: SEEDS.to_vec(), ..Options::default() });
    for id in SEEDS {
        let file = format!("Mid_{id}.so");
        server.wait_for_module(&file, Duration::from_secs(5), |e| e.is_some_and(|e| e["status"] == "loaded"));
    }
    for (name, ip) in [("d1", env.ssh.addresses[0].as_str()), ("d2", env.ssh.addresses[1].as_str())] {
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server
}

fn run_on(server: &Server, module: u32, backend: &str, hosts: &[&str], params: Value) -> Value {
    let body = json!({ "module": module, "hosts": hosts, "params": params, "backend": backend });
    let (status, answer) = server.post("/api/jobs", &body);
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    server.wait_job(answer["id"].as_i64().unwrap(), Duration::from_secs(60))
}

/// The first of `candidates` (path, the command line the module names) that exists on this machine.
fn expected(candidates: &[(&str, String)]) -> String {
    let (_, command) = candidates
        .iter()
        .find(|(path, _)| Path::new(path).exists())
        .unwrap_or_else(|| panic!("none of {candidates:?} exists on this machine"));
    format!("==> {command} <==")
}

fn check(server: &Server, module: u32, params: Value, source: &str) {
    for (backend, hosts) in [("ssh", vec!["d1", "d2"]), ("local", vec!["localhost"])] {
        let job = run_on(server, module, backend, &hosts, params.clone());
        assert_eq!(job["status"], "succeeded", "{module} on {backend}: {job}");
        let results = job["results"].as_array().unwrap();
        assert_eq!(results.len(), hosts.len(), "{job}");
        for result in results {
            let stdout = result["stdout"].as_str().unwrap();
            assert_eq!(stdout.lines().next(), Some(source), "{module} on {backend} says which source: {result}");
            assert_eq!(result["status"], "ok", "{result}");
        }
        println!("{module} on {backend}: {source} ({} lines)", results[0]["stdout"].as_str().unwrap().lines().count());
    }
}

#[test]
fn the_system_log_comes_from_the_first_source_each_host_has() {
    let server = server();
    let source = expected(&[
        ("/var/log/messages", "tail -n 5 /var/log/messages".into()),
        ("/var/log/syslog", "tail -n 5 /var/log/syslog".into()),
        ("/usr/bin/journalctl", "/usr/bin/journalctl -n 5 --no-pager --quiet".into()),
        ("/bin/journalctl", "/bin/journalctl -n 5 --no-pager --quiet".into()),
    ]);
    check(&server, 1001, json!({ "lines": 5 }), &source);
}

#[test]
fn the_latest_logins_come_from_the_first_source_each_host_has() {
    let server = server();
    let source = expected(&[
        ("/var/log/secure", "tail -n 7 /var/log/secure".into()),
        ("/var/log/auth.log", "tail -n 7 /var/log/auth.log".into()),
        ("/usr/bin/last", "/usr/bin/last -F -n 7".into()),
        ("/bin/last", "/bin/last -F -n 7".into()),
    ]);
    check(&server, 1002, json!({ "lines": 7 }), &source);
}

#[test]
fn kernel_modules_come_from_lsmod_or_the_kernels_own_lists() {
    let server = server();
    let source = expected(&[
        ("/sbin/lsmod", "/sbin/lsmod".into()),
        ("/usr/sbin/lsmod", "/usr/sbin/lsmod".into()),
        ("/bin/lsmod", "/bin/lsmod".into()),
        ("/usr/bin/lsmod", "/usr/bin/lsmod".into()),
        ("/proc/modules", "cat /proc/modules".into()),
        ("/sys/module", "ls -1 /sys/module".into()),
    ]);
    check(&server, 1004, json!({}), &source);
    // The list itself: what this machine's source shows, after the line naming it.
    let job = run_on(&server, 1004, "ssh", &["d1"], json!({}));
    let shown: Vec<&str> = job["results"][0]["stdout"].as_str().unwrap().lines().skip(1).collect();
    assert!(!shown.is_empty(), "{job}");
}

#[test]
fn a_site_path_is_used_as_given_even_when_it_is_missing() {
    // A site path that does not exist is the site's choice: no search, the failure names the path.
    let missing = "/var/log/omserver-no-such-log";
    let env = testenv();
    let extra_config = format!("{}[modules.1001]\npath = \"{missing}\"\n", env.backends_config());
    let server = Server::start_with(Options { extra_config, seed: vec![1001], ..Options::default() });
    server.wait_for_module("Mid_1001.so", Duration::from_secs(5), |e| e.is_some_and(|e| e["status"] == "loaded"));
    let job = run_on(&server, 1001, "local", &["localhost"], json!({ "lines": 3 }));
    assert_eq!(job["status"], "failed", "{job}");
    let result = &job["results"][0];
    assert!(result["stderr"].as_str().unwrap().contains(missing), "{result}");
    assert!(!result["stdout"].as_str().unwrap().starts_with("==>"), "a site setting is used as given: {result}");
}
