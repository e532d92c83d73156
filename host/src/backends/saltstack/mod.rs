//! The `saltstack` backend: drives a Salt master through salt-api (rest_cherrypy).
//!
//! Layout:
//! - `api`: the HTTP client (login and token reuse, publish, the event stream);
//! - `events`: parsing the event stream's server-sent events;
//! - `job`: one job from publish to the last return, with `saltutil.kill_job` when the wait ends early.
//!
//! A command is `cmd.run_all` with the argument vector as ONE list argument and `python_shell=False`: the minion
//! hands the list to the program as it is (no shell, no splitting, no `name=value` parsing of its items). Each
//! call opens its own event subscription before it publishes, so every return is seen, and reports each minion
//! the moment its return arrives. A file is copied with `cp.recv_chunked` (what `salt-cp --chunked` uses) to a
//! temporary name beside the destination, then `file.rename`d over it. (Like `salt-cp`, `cp.recv_chunked` creates
//! a missing destination directory.) A minion that has not returned within `timeout_secs` is unreachable; so the
//! effective command limit on Salt is the smaller of `timeout_secs` and `command_timeout_secs` (which the minion
//! itself enforces through `cmd.run_all`'s `timeout`).

mod api;
// pub(crate): re-exported for the fuzz targets by `crate::fuzzing`.
pub(crate) mod events;
mod job;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use abi_stable::std_types::ROption;
use base64::Engine;
use omserver_plugin_api::{HostResult, HostStatus};
use serde_json::{json, Value};
use tokio::time::Instant;

use self::{
    api::{ApiError, SaltApi},
    job::{Call, Outcome},
};
use super::{
    config::{SaltConfig, SaltTarget},
    failed, millis, output, unreachable, Host, Limits, Report,
};

/// Raw bytes per `cp.recv_chunked` call. Its base64 (4/3 larger) must stay under salt-api's default
/// `max_request_body_size` of 1 MiB.
const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug)]
pub struct SaltBackend {
    /// The client, or the configuration problem that prevents one (reported on every host and by `check`).
    api: Result<Arc<SaltApi>, String>,
    limits: Limits,
}

impl SaltBackend {
    pub fn new(config: SaltConfig, limits: Limits) -> SaltBackend {
        SaltBackend { api: SaltApi::new(config).map(Arc::new), limits }
    }

    pub async fn run(&self, hosts: &[Host], argv: &[String], report: &Report) -> Vec<HostResult> {
        let started = Instant::now();
        let api = match self.api(hosts, report) {
            Ok(api) => api,
            Err(refused) => return refused,
        };
        let limit = self.limits.output_limit_bytes;
        let timeout = wait_timeout(api);
        let mut tally = Tally::new(hosts, api.config().target, report, started);
        let minions = tally.minions.clone();
        let outcome = async {
            let mut events = api.subscribe().await?;
            let call = Call {
                fun: "cmd.run_all",
                arg: json!([argv]),
                kwarg: json!({
                    "python_shell": false,
                    // Output as the program wrote it (Salt strips trailing whitespace by default).
                    "rstrip": false,
                    "timeout": self.limits.command_timeout.as_secs().max(1),
                }),
            };
            job::run(api, &mut events, &minions, call, timeout, |minion, outcome| {
                let result = match outcome {
                    Outcome::Returned(data) => command_result(data, limit),
                    other => not_returned(&other, timeout),
                };
                tally.done(minion, result);
            })
            .await
        }
        .await;
        tally.finish(outcome)
    }

    pub async fn copy_file(
        &self,
        hosts: &[Host],
        source: &Path,
        dest: &str,
        mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        let started = Instant::now();
        let api = match self.api(hosts, report) {
            Ok(api) => api,
            Err(refused) => return refused,
        };
        let refuse = |message: &str| hosts.iter().map(|h| report.done(failed(&h.name, message, None))).collect();
        let temporary = match temporary_name(dest) {
            Ok(name) => name,
            Err(message) => return refuse(&message),
        };
        let data = match tokio::fs::read(source).await {
            Ok(data) => data,
            Err(e) => return refuse(&format!("cannot read {}: {e}", source.display())),
        };
        let limit = self.limits.output_limit_bytes;
        let timeout = wait_timeout(api);
        let mut tally = Tally::new(hosts, api.config().target, report, started);
        let outcome = async {
            let mut events = api.subscribe().await?;
            let mut steps = chunk_calls(&data, &temporary, mode);
            steps.push(Call { fun: "file.rename", arg: json!([]), kwarg: json!({"src": temporary, "dst": dest}) });
            let last = steps.len() - 1;
            // Minions still in the copy: one that fails a step is reported then and leaves it.
            let mut alive = tally.minions.clone();
            for (i, step) in steps.into_iter().enumerate() {
                let fun = step.fun;
                let mut next = Vec::with_capacity(alive.len());
                job::run(api, &mut events, &alive, step, timeout, |minion, outcome| {
                    let result = match outcome {
                        Outcome::Returned(ret) if ret.get("return") == Some(&Value::Bool(true)) => {
                            if i < last {
                                next.push(minion.to_owned());
                                return;
                            }
                            copied(data.len(), dest)
                        }
                        Outcome::Returned(ret) => failed(
                            "",
                            &format!("{fun} to {temporary}: {}", output::cap(&return_text(ret), limit)),
                            None,
                        ),
                        other => not_returned(&other, timeout),
                    };
                    tally.done(minion, result);
                })
                .await?;
                let left: Vec<String> = alive.iter().filter(|m| !next.contains(m)).cloned().collect();
                if i > 0 && !left.is_empty() {
                    remove_leftovers(api, &left, &temporary);
                }
                alive = next;
                if alive.is_empty() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        tally.finish(outcome)
    }

    pub async fn check(&self) -> Result<String, String> {
        let api = self.api.as_ref().map_err(String::clone)?;
        api.login().await.map_err(|e| e.to_string())?;
        let config = api.config();
        Ok(format!("salt-api at {}: logged in as {} (eauth {})", api.url(), config.username, config.eauth))
    }

    /// Makes the cached salt-api token invalid (see `SaltApi::spoil_token`). For tests of the re-login path.
    #[doc(hidden)]
    pub async fn spoil_token_for_tests(&self) {
        if let Ok(api) = &self.api {
            api.spoil_token().await;
        }
    }

    /// The client, or (a configuration problem) every host unreachable with the reason.
    fn api(&self, hosts: &[Host], report: &Report) -> Result<&Arc<SaltApi>, Vec<HostResult>> {
        self.api
            .as_ref()
            .map_err(|problem| hosts.iter().map(|h| report.done(unreachable(&h.name, problem, None))).collect())
    }
}

/// How long to wait for the minions' returns.
fn wait_timeout(api: &SaltApi) -> Duration {
    Duration::from_secs(api.config().timeout_secs.max(1))
}

/// The hosts of one call as minion ids, and their results as they come in.
struct Tally<'a> {
    hosts: &'a [Host],
    /// Distinct minion ids, in host order (two inventory hosts may name the same minion).
    minions: Vec<String>,
    /// Which hosts each minion id stands for.
    by_minion: BTreeMap<String, Vec<usize>>,
    results: Vec<Option<HostResult>>,
    report: &'a Report,
    started: Instant,
}

impl<'a> Tally<'a> {
    fn new(hosts: &'a [Host], target: SaltTarget, report: &'a Report, started: Instant) -> Tally<'a> {
        let mut minions = Vec::new();
        let mut by_minion: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, host) in hosts.iter().enumerate() {
            let id = match target {
                SaltTarget::Name => &host.name,
                SaltTarget::Address => &host.address,
            };
            let indices = by_minion.entry(id.clone()).or_default();
            if indices.is_empty() {
                minions.push(id.clone());
            }
            indices.push(i);
        }
        Tally { hosts, minions, by_minion, results: vec![None; hosts.len()], report, started }
    }

    /// Records and reports `result` (its host name and duration are filled in here) for every host of `minion`.
    fn done(&mut self, minion: &str, mut result: HostResult) {
        result.duration_ms = millis(self.started.elapsed());
        for &i in self.by_minion.get(minion).into_iter().flatten() {
            if self.results[i].is_none() {
                result.host = self.hosts[i].name.as_str().into();
                self.results[i] = Some(self.report.done(result.clone()));
            }
        }
    }

    /// Every result in host order; a host not reported yet is unreachable with `outcome`'s error (salt-api
    /// down, bad credentials, a publish that failed).
    fn finish(self, outcome: Result<(), ApiError>) -> Vec<HostResult> {
        if let Err(err) = &outcome {
            tracing::warn!(error = %err, hosts = self.hosts.len(), "salt-api call failed");
        }
        let elapsed = Some(self.started.elapsed());
        let report = self.report;
        self.results
            .into_iter()
            .zip(self.hosts)
            .map(|(slot, host)| match (slot, &outcome) {
                (Some(result), _) => result,
                (None, Err(err)) => report.done(unreachable(&host.name, &err.to_string(), elapsed)),
                (None, Ok(())) => report.done(failed(&host.name, "no result from salt", elapsed)),
            })
            .collect()
    }
}

/// `cmd.run_all`'s return: `{"retcode", "stdout", "stderr", "pid"}`, or a string when Salt could not run the
/// command at all ("ERROR: Unable to run command …", "'cmd.run_all' is not available.").
fn command_result(data: &Value, limit: usize) -> HostResult {
    let ret = data.get("return").unwrap_or(&Value::Null);
    let Some(retcode) = ret.get("retcode").and_then(Value::as_i64) else {
        return failed("", &output::cap(&return_text(data), limit), None);
    };
    let text = |key: &str| output::cap(ret.get(key).and_then(Value::as_str).unwrap_or_default(), limit);
    HostResult {
        host: "".into(),
        status: if retcode == 0 { HostStatus::Ok } else { HostStatus::Failed },
        rc: ROption::RSome(i32::try_from(retcode).unwrap_or(i32::MAX)),
        stdout: text("stdout").into(),
        stderr: text("stderr").into(),
        duration_ms: 0,
    }
}

/// A return that is not what was hoped for, as text: a string as it is, anything else as JSON.
fn return_text(data: &Value) -> String {
    match data.get("return") {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "the minion sent an unreadable return".to_owned(),
    }
}

fn not_returned(outcome: &Outcome<'_>, timeout: Duration) -> HostResult {
    let message = match outcome {
        Outcome::NotKnown => "minion not known to the master (no accepted key with this id)".to_owned(),
        Outcome::NoReturn => format!("no return within {} s", timeout.as_secs()),
        Outcome::Lost(err) => format!("no return: {err}"),
        Outcome::Returned(_) => "returned".to_owned(),
    };
    unreachable("", &message, None)
}

fn copied(bytes: usize, dest: &str) -> HostResult {
    HostResult {
        host: "".into(),
        status: HostStatus::Ok,
        rc: ROption::RSome(0),
        stdout: format!("copied {bytes} bytes to {dest}\n").into(),
        stderr: "".into(),
        duration_ms: 0,
    }
}

/// A hidden name beside `dest`, so that the final rename stays on one file system.
fn temporary_name(dest: &str) -> Result<String, String> {
    let (dir, name) = dest.rsplit_once('/').ok_or_else(|| format!("destination {dest:?} must be an absolute path"))?;
    if !dest.starts_with('/') || name.is_empty() || name == "." || name == ".." {
        return Err(format!("destination {dest:?} must be an absolute path to a file"));
    }
    let tag: u64 = rand::random();
    Ok(format!("{dir}/.{name}.omserver-{tag:016x}.tmp"))
}

/// One `cp.recv_chunked` call per chunk (always at least one, so that an empty file is created). Uncompressed:
/// base64 of the raw bytes, which the minion decodes and writes as they are. The first chunk creates the file and
/// sets `mode`; the others append.
fn chunk_calls<'a>(data: &[u8], temporary: &str, mode: u32) -> Vec<Call<'a>> {
    let encode = |chunk: &[u8]| base64::engine::general_purpose::STANDARD.encode(chunk);
    let mut chunks: Vec<&[u8]> = data.chunks(CHUNK_BYTES).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut kwarg = json!({"dest": temporary, "chunk": encode(chunk), "append": i > 0, "compressed": false});
            if i == 0 {
                kwarg["mode"] = json!(mode);
            }
            Call { fun: "cp.recv_chunked", arg: json!([]), kwarg }
        })
        .collect()
}

/// Removes a half-written temporary file from minions that dropped out of a copy. Best effort, in the background.
fn remove_leftovers(api: &Arc<SaltApi>, minions: &[String], temporary: &str) {
    let low = json!({
        "client": "local_async",
        "tgt": minions.join(","),
        "tgt_type": "list",
        "fun": "file.remove",
        "kwarg": {"path": temporary},
    });
    let api = api.clone();
    tokio::spawn(async move {
        if let Err(err) = api.publish(low).await {
            tracing::warn!(error = %err, "could not remove a temporary file left by a failed copy");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, address: &str) -> Host {
        Host { name: name.into(), address: address.into(), port: None, user: None }
    }

    #[test]
    fn command_returns_map_to_outcomes() {
        let ok = json!({"return": {"retcode": 0, "stdout": "m1\n", "stderr": "", "pid": 1}, "success": true});
        let r = command_result(&ok, 100);
        assert_eq!((r.status, r.rc, r.stdout.as_str()), (HostStatus::Ok, ROption::RSome(0), "m1\n"));
        let bad = json!({"return": {"retcode": 3, "stdout": "", "stderr": "xyz", "pid": 1}, "success": false});
        let r = command_result(&bad, 2);
        assert_eq!((r.status, r.rc), (HostStatus::Failed, ROption::RSome(3)));
        assert_eq!(r.stderr.as_str(), "xy\n[output cut: 1 more bytes]");
        let error = json!({"return": "ERROR: Unable to run command", "success": false});
        let r = command_result(&error, 100);
        assert_eq!(
            (r.status, r.rc, r.stderr.as_str()),
            (HostStatus::Failed, ROption::RNone, "ERROR: Unable to run command")
        );
    }

    #[test]
    fn minion_ids_come_from_name_or_address_and_repeat_once() {
        let hosts = [host("web1", "127.0.0.2"), host("web2", "127.0.0.2")];
        let report = Report::discard();
        let tally = Tally::new(&hosts, SaltTarget::Name, &report, Instant::now());
        assert_eq!(tally.minions, ["web1", "web2"]);
        let mut tally = Tally::new(&hosts, SaltTarget::Address, &report, Instant::now());
        assert_eq!(tally.minions, ["127.0.0.2"]);
        tally.done("127.0.0.2", copied(3, "/x"));
        let results = tally.finish(Ok(()));
        let names: Vec<&str> = results.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(names, ["web1", "web2"], "one return serves both hosts");
    }

    #[test]
    fn files_are_sent_in_chunks_that_fit_salt_api_s_body_limit() {
        let data = vec![0xffu8; CHUNK_BYTES * 2 + 1];
        let calls = chunk_calls(&data, "/d/.f.tmp", 0o640);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].kwarg["mode"], json!(0o640));
        assert_eq!(calls[0].kwarg["append"], json!(false));
        assert!(calls[1].kwarg.get("mode").is_none() && calls[1].kwarg["append"] == json!(true));
        let body = serde_json::to_string(&calls[0].kwarg).unwrap();
        assert!(body.len() < 1024 * 1024 - 4096, "{} bytes", body.len());
        assert_eq!(chunk_calls(&[], "/d/.f.tmp", 0o600).len(), 1, "an empty file is still created");
    }

    #[test]
    fn temporary_names_sit_beside_the_destination() {
        let name = temporary_name("/etc/nginx/nginx.conf").unwrap();
        assert!(name.starts_with("/etc/nginx/.nginx.conf.omserver-") && name.ends_with(".tmp"), "{name}");
        for bad in ["nginx.conf", "/etc/", "/etc/..", ""] {
            assert!(temporary_name(bad).is_err(), "{bad:?}");
        }
    }
}
