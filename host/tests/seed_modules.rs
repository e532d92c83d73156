//! Each of the seven seed modules on the local backend against 127.0.0.1, with its result checked, and the
//! injection attempts the original let through refused before anything runs.

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use common::{Options, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ALL: &[u32] = &[1001, 1002, 1003, 1004, 1005, 1006, 1007];

fn server(extra_config: String) -> Server {
    let server = Server::start_with(Options { extra_config, seed: ALL.to_vec(), ..Options::default() });
    for id in ALL {
        let file = format!("Mid_{id}.so");
        server.wait_for_module(&file, Duration::from_secs(5), |e| e.is_some_and(|e| e["status"] == "loaded"));
    }
    server
}

fn only_result(job: &Value) -> &Value {
    let results = job["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{job}");
    &results[0]
}

/// What running `argv` directly on this machine gives: the module's result must match it.
fn direct(argv: &[&str]) -> (bool, String) {
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(_) => (false, String::new()),
    }
}

#[test]
fn log_viewers_tail_the_configured_file_and_fail_cleanly_on_a_missing_one() {
    let logs = tempfile::tempdir().unwrap();
    let syslog = logs.path().join("messages");
    let lines: Vec<String> = (1..=100).map(|i| format!("line {i}")).collect();
    fs::write(&syslog, lines.join("\n") + "\n").unwrap();
    let missing = logs.path().join("secure-does-not-exist");
    let server = server(format!(
        "[modules.1001]\npath = \"{}\"\n[modules.1002]\npath = \"{}\"\n",
        syslog.display(),
        missing.display()
    ));

    let job = server.run_job(1001, &["127.0.0.1"], json!({ "lines": 5 }));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(only_result(&job)["stdout"], "line 96\nline 97\nline 98\nline 99\nline 100\n");
    let job = server.run_job(1001, &["127.0.0.1"], json!({}));
    assert_eq!(only_result(&job)["stdout"].as_str().unwrap().lines().count(), 50, "the default is 50 lines");
    assert_eq!(job["params"], json!({ "lines": 50 }));

    let job = server.run_job(1002, &["localhost"], json!({ "lines": "10" }));
    assert_eq!(job["status"], "failed");
    let result = only_result(&job);
    assert_eq!((result["status"].as_str(), result["rc"].as_i64()), (Some("failed"), Some(1)));
    let stderr = result["stderr"].as_str().unwrap();
    assert!(stderr.contains("secure-does-not-exist") && stderr.contains("No such file"), "{stderr}");
}

#[test]
fn os_version_and_kernel_modules_match_this_machine() {
    let server = server(String::new());
    let job = server.run_job(1003, &["127.0.0.1"], json!({}));
    let first_line = fs::read_to_string("/etc/issue").unwrap().lines().next().unwrap().to_owned();
    assert_eq!(only_result(&job)["stdout"], format!("{first_line}\n"));

    // 1004 without a site setting: seed_modules_debian.rs. With one, the site's program runs as given.
}

#[test]
fn a_site_setting_for_1004_wins_over_the_search() {
    let server = server("[modules.1004]\nlsmod = \"/bin/echo\"\n".to_owned());
    let job = server.run_job(1004, &["127.0.0.1"], json!({}));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(only_result(&job)["stdout"], "\n", "/bin/echo with no arguments, no source line before it");
}

#[test]
fn sync_app_file_copies_from_the_file_store_and_runs_the_follow_up() {
    let hosts_root = tempfile::tempdir().unwrap();
    let dest = hosts_root.path().join("nginx");
    let server = server(format!(
        "[modules.1005]\n\"dest.nginx\" = \"{d}\"\n\"then.nginx\" = \"chmod u+x {d}\"\n\"dest.resin\" = \"{r}\"\n",
        d = dest.display(),
        r = hosts_root.path().join("no-such-dir/resin.conf").display()
    ));
    let script = "#!/bin/sh\necho nginx init script\n";
    fs::write(server.files_dir().join("nginx"), script).unwrap();

    let job = server.run_job(1005, &["127.0.0.1"], json!({ "file": "nginx" }));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(fs::read_to_string(&dest).unwrap(), script);
    let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o744, "copied as 0644, then the follow-up's chmod u+x");
    let stdout = only_result(&job)["stdout"].as_str().unwrap().to_owned();
    assert!(stdout.starts_with(&format!("copied {} bytes to {}", script.len(), dest.display())), "{stdout}");

    // The source is missing from the store: the copy fails for the host, the follow-up never runs.
    let job = server.run_job(1005, &["127.0.0.1"], json!({ "file": "resin" }));
    let stderr = only_result(&job)["stderr"].as_str().unwrap().to_owned();
    assert!(stderr.starts_with("cannot read") && stderr.contains("resin.conf"), "{stderr}");
    assert!(!Path::new(&hosts_root.path().join("no-such-dir")).exists());
}

#[test]
fn view_app_config_shows_the_file_or_the_open_file_limit() {
    let conf = tempfile::NamedTempFile::new().unwrap();
    fs::write(conf.path(), "worker_processes 4;\n").unwrap();
    let server = server(format!("[modules.1006]\n\"path.nginx\" = \"{}\"\n", conf.path().display()));

    let job = server.run_job(1006, &["127.0.0.1"], json!({ "service": "nginx" }));
    assert_eq!(only_result(&job)["stdout"], "worker_processes 4;\n");

    let job = server.run_job(1006, &["127.0.0.1"], json!({ "service": "limits" }));
    let (_, expected) = direct(&["sh", "-c", "ulimit -n"]);
    assert_eq!(only_result(&job)["stdout"], expected.as_str());

    assert!(!Path::new("/usr/local/apache/conf/httpd.conf").exists());
    let job = server.run_job(1006, &["127.0.0.1"], json!({ "service": "apache" }));
    let result = only_result(&job);
    assert_eq!(result["status"], "failed");
    assert!(result["stderr"].as_str().unwrap().contains("/usr/local/apache/conf/httpd.conf"), "{result}");
}

#[test]
fn restart_service_runs_the_init_script_or_the_site_command() {
    let server = server("[modules.1007]\n\"command.nginx\" = \"echo restarted nginx\"\n".to_owned());
    let job = server.run_job(1007, &["127.0.0.1"], json!({ "service": "nginx" }));
    assert_eq!(only_result(&job)["stdout"], "restarted nginx\n");

    // The default command for squid is the init script, absent here: a failed host result, not a crash.
    assert!(!Path::new("/etc/init.d/squid").exists());
    let job = server.run_job(1007, &["127.0.0.1"], json!({ "service": "squid" }));
    let result = only_result(&job);
    assert_eq!(result["status"], "failed");
    assert!(result["stderr"].as_str().unwrap().starts_with("cannot start /etc/init.d/squid"), "{result}");
}

#[test]
fn injection_attempts_are_refused_and_nothing_runs() {
    let server = server(String::new());
    let attempts: &[(u32, &str, Value)] = &[
        (1001, "lines", json!("1; id")),
        (1001, "lines", json!("1 /etc/shadow")),
        (1001, "lines", json!("$(id)")),
        (1002, "lines", json!("../../etc/passwd")),
        (1002, "lines", json!(-5)),
        (1005, "file", json!("../../etc/passwd")),
        (1006, "service", json!("nginx; cat /etc/shadow")),
        (1006, "service", json!("$(id)")),
        (1007, "service", json!("nginx && reboot")),
        (1007, "service", json!(["nginx"])),
    ];
    for (module, field, value) in attempts {
        let (status, body) =
            server.post("/api/jobs", &json!({ "module": module, "hosts": ["127.0.0.1"], "params": { *field: value } }));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{module} {field}={value}: {body}");
        assert_eq!(body["field"], *field, "{body}");
    }
    let (status, jobs) = server.get("/api/jobs");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jobs, json!([]), "no job was created");
    // The module also rejects a host outside the inventory: a 422 that names it.
    let (status, body) = server.post("/api/jobs", &json!({ "module": 1003, "hosts": ["127.0.0.1", "evil;id"] }));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "unknown hosts (not in the inventory): evil;id");
}

#[test]
fn a_running_job_shows_what_its_hosts_reported_so_far() {
    let hosts_root = tempfile::tempdir().unwrap();
    let dest = hosts_root.path().join("nginx");
    // The follow-up takes a while: the copy's result is there to see before the job ends.
    let server =
        server(format!("[modules.1005]\n\"dest.nginx\" = \"{}\"\n\"then.nginx\" = \"sleep 2\"\n", dest.display()));
    fs::write(server.files_dir().join("nginx"), "x").unwrap();
    let id = server.submit(1005, &["127.0.0.1"], json!({ "file": "nginx" }));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let partial = loop {
        let (_, job) = server.get(&format!("/api/jobs/{id}"));
        if job["status"] == "running" && job["results"].as_array().is_some_and(|r| !r.is_empty()) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "no progress shown while running: {job}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(partial["results"][0]["stdout"].as_str().unwrap().starts_with("copied 1 bytes to"), "{partial}");
    let done = server.wait_job(id, Duration::from_secs(30));
    assert_eq!(done["status"], "succeeded", "{done}");
}
