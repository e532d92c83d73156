//! Benchmark: `uname -n` on many loopback hosts through each backend, beside the tools' own clients. Run with
//! `cargo xtask bench-backends [ROUNDS]` (default 5), which starts the test environment first; figures go to
//! BENCHMARKS.md.
//!
//! In one run, each measured ROUNDS times (median and min printed):
//! - our ssh backend, cold (a new backend, so a new connection per host) and warm (the same backend again: pooled);
//! - 50 OpenSSH clients started at once, one per host (what a parallel-ssh script does);
//! - ansible ad-hoc through our backend with pipelining, forks 10 and forks 50;
//! - salt-api's `local` client called directly for `cmd.run_all` on the running minions, and the same through
//!   our saltstack backend (the test environment has two minions, not fifty).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use omserver::backends::{
    ansible::AnsibleBackend,
    config::{AnsibleConfig, HostKeyPolicy, SaltConfig, SaltTarget, Secret, SshConfig},
    saltstack::SaltBackend,
    ssh::SshBackend,
    Host, Limits, Report,
};
use omserver_plugin_api::HostStatus;
use serde_json::{json, Value};

const HOSTS: usize = 50;

struct Env {
    ssh_port: u16,
    addresses: Vec<String>,
    user: String,
    identity_file: PathBuf,
    known_hosts_file: PathBuf,
    ansible: PathBuf,
    salt_url: String,
    salt_user: String,
    salt_password: String,
    salt_eauth: String,
    minions: Vec<String>,
}

fn load_env(target: &Path) -> Result<Env, Box<dyn std::error::Error>> {
    let path = target.join("testenv/env.json");
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(Env {
        ssh_port: env["ssh"]["port"].as_u64().unwrap_or(22) as u16,
        addresses: env["ssh"]["addresses"].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default(),
        user: text(&env["ssh"]["user"]),
        identity_file: text(&env["ssh"]["identity_file"]).into(),
        known_hosts_file: text(&env["ssh"]["known_hosts_file"]).into(),
        ansible: text(&env["ansible"]["executable"]).into(),
        salt_url: text(&env["salt"]["url"]),
        salt_user: text(&env["salt"]["username"]),
        salt_password: text(&env["salt"]["password"]),
        salt_eauth: text(&env["salt"]["eauth"]),
        minions: env["salt"]["minions"].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default(),
    })
}

/// Median and minimum.
fn summary(mut runs: Vec<Duration>) -> (Duration, Duration) {
    runs.sort();
    (runs[runs.len() / 2], runs[0])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn all_ok(what: &str, results: &[omserver_plugin_api::HostResult]) {
    let bad: Vec<_> = results.iter().filter(|r| r.status != HostStatus::Ok).collect();
    assert!(bad.is_empty(), "{what}: {} hosts did not succeed, e.g. {:?}", bad.len(), bad.first());
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let env = load_env(&target)?;
    if env.addresses.len() < HOSTS {
        return Err(format!(
            "the test environment has {} ssh addresses, the benchmark needs {HOSTS}",
            env.addresses.len()
        )
        .into());
    }
    let limits = Limits { command_timeout: Duration::from_secs(60), output_limit_bytes: 1 << 20 };
    let hosts: Vec<Host> = env.addresses[..HOSTS]
        .iter()
        .enumerate()
        .map(|(i, a)| Host { name: format!("h{i:02}"), address: a.clone(), port: None, user: None })
        .collect();
    let argv: Vec<String> = vec!["uname".into(), "-n".into()];
    let report = Report::discard();
    let ssh_config = SshConfig {
        user: env.user.clone(),
        port: env.ssh_port,
        identity_file: env.identity_file.clone(),
        known_hosts_file: env.known_hosts_file.clone(),
        host_key_policy: HostKeyPolicy::Strict,
        connect_timeout_secs: 10,
        max_parallel: 100,
        ..SshConfig::default()
    };
    let state = tempfile::tempdir()?;

    // ssh, cold then warm.
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let backend = SshBackend::new(ssh_config.clone(), limits);
        let started = Instant::now();
        all_ok("ssh cold", &backend.run(&hosts, &argv, &report).await);
        cold.push(started.elapsed());
        let started = Instant::now();
        all_ok("ssh warm", &backend.run(&hosts, &argv, &report).await);
        warm.push(started.elapsed());
    }

    // 50 OpenSSH clients at once.
    let mut openssh = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let children: Vec<_> = hosts
            .iter()
            .map(|h| {
                Command::new("ssh")
                    .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no"])
                    .arg("-o")
                    .arg(format!("UserKnownHostsFile={}", env.known_hosts_file.display()))
                    .arg("-i")
                    .arg(&env.identity_file)
                    .args(["-p", &env.ssh_port.to_string(), &format!("{}@{}", env.user, h.address), "uname", "-n"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut child in children {
            assert!(child.wait()?.success(), "an OpenSSH client failed");
        }
        openssh.push(started.elapsed());
    }

    // ansible ad-hoc, pipelining on (the backend always sets it).
    let mut ansible = Vec::new();
    for forks in [10u32, 50] {
        let config = AnsibleConfig {
            executable: env.ansible.clone(),
            forks,
            user: env.user.clone(),
            port: env.ssh_port,
            identity_file: env.identity_file.clone(),
            known_hosts_file: env.known_hosts_file.clone(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout_secs: 10,
        };
        let backend = AnsibleBackend::new(config, limits, state.path());
        let mut runs = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            all_ok("ansible", &backend.run(&hosts, &argv, &report).await);
            runs.push(started.elapsed());
        }
        ansible.push((forks, summary(runs)));
    }

    // salt-api raw, then our backend, alternating so both see the same minion load.
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/login", env.salt_url))
        .json(&json!({ "username": env.salt_user, "password": env.salt_password, "eauth": env.salt_eauth }))
        .send()
        .await?
        .json()
        .await?;
    let token = login["return"][0]["token"].as_str().ok_or("salt-api login gave no token")?.to_owned();
    let salt = SaltBackend::new(
        SaltConfig {
            url: env.salt_url.clone(),
            username: env.salt_user.clone(),
            password: Secret::new(env.salt_password.clone()),
            eauth: env.salt_eauth.clone(),
            timeout_secs: 30,
            target: SaltTarget::Name,
            ca_file: None,
        },
        limits,
    );
    let minions: Vec<Host> = env
        .minions
        .iter()
        .enumerate()
        .map(|(i, m)| Host { name: m.clone(), address: format!("127.0.1.{}", i + 1), port: None, user: None })
        .collect();
    let tgt = env.minions.join(",");
    // One call each first, so that neither pays the minions' first-call warm-up.
    all_ok("saltstack", &salt.run(&minions, &argv, &report).await);
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(10) {
        let started = Instant::now();
        let answer: Value = client
            .post(&env.salt_url)
            .header("X-Auth-Token", &token)
            .json(&json!([{ "client": "local", "tgt": tgt, "tgt_type": "list", "fun": "cmd.run_all",
                "arg": [["uname", "-n"]], "kwarg": { "python_shell": false } }]))
            .send()
            .await?
            .json()
            .await?;
        raw.push(started.elapsed());
        let returned = answer["return"][0].as_object().map_or(0, |m| m.len());
        assert_eq!(returned, env.minions.len(), "raw salt-api: {answer}");
        let started = Instant::now();
        all_ok("saltstack", &salt.run(&minions, &argv, &report).await);
        ours.push(started.elapsed());
    }

    let (cold, warm, openssh) = (summary(cold), summary(warm), summary(openssh));
    let (raw, ours) = (summary(raw), summary(ours));
    println!("uname -n on {HOSTS} loopback hosts, {rounds} rounds each (median / min):");
    println!("| what | median | min |");
    println!("|---|---|---|");
    println!("| ssh backend, cold (new connections) | {} | {} |", ms(cold.0), ms(cold.1));
    println!("| ssh backend, warm (pooled) | {} | {} |", ms(warm.0), ms(warm.1));
    println!("| {HOSTS} OpenSSH clients at once | {} | {} |", ms(openssh.0), ms(openssh.1));
    for (forks, (median, min)) in &ansible {
        println!("| ansible backend, pipelining, forks {forks} | {} | {} |", ms(*median), ms(*min));
    }
    println!("| salt-api `local` call, raw, {} minions | {} | {} |", env.minions.len(), ms(raw.0), ms(raw.1));
    println!("| saltstack backend, same minions | {} | {} |", ms(ours.0), ms(ours.1));
    let best_ansible = ansible.iter().map(|(_, (m, _))| *m).min().unwrap_or_default();
    println!();
    println!(
        "ssh warm / best ansible: {:.3} (goal ≤ 0.1); ssh cold / OpenSSH: {:.2} (goal ≤ 1); saltstack / raw: {:.2} (goal ≤ 1.10)",
        warm.0.as_secs_f64() / best_ansible.as_secs_f64(),
        cold.0.as_secs_f64() / openssh.0.as_secs_f64(),
        ours.0.as_secs_f64() / raw.0.as_secs_f64()
    );
    Ok(())
}
