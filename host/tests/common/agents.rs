//! Real `omaudit-agent` processes for tests: each [`Agent`] is one audited user on one audited host, driven
//! through the agent's prompt form (as bash's PROMPT_COMMAND runs it) with its own spool and detached background
//! flushers, and the checks that every event typed was stored exactly once ([`assert_exactly_once`]).
//!
//! **Why prompts and not a hand-written spool:** the spool is the agent's private format; writing it from a test
//! would test the test.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;
use tempfile::TempDir;

use super::{cli, Server};

/// `target/debug/omaudit-agent`, beside the `omserver` binary under test, and not older than its sources (cargo
/// builds it for `cargo test --workspace`, not for `cargo test -p omserver`).
pub fn agent_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_omserver")).with_file_name("omaudit-agent");
    let build = "build it with `cargo build -p omaudit-agent` (or run `cargo xtask test`)";
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", path.display()));
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let mut pending = vec![sources];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().map_while(Result::ok) {
            let (file, meta) = (entry.path(), entry.metadata().expect("stat an agent source"));
            if meta.is_dir() {
                pending.push(file);
            } else {
                let changed = meta.modified().expect("mtime");
                assert!(changed <= built, "{} is older than {}: {build}", path.display(), file.display());
            }
        }
    }
    path
}

/// One audited user on one audited host: its own spool directory, its own host and agent token.
pub struct Agent {
    pub index: usize,
    pub binary: PathBuf,
    pub spool: TempDir,
    pub server: String,
    pub token: String,
    /// The inventory address of its host.
    pub ip: String,
    /// The network namespace it runs in (`ip netns exec`), if not this one.
    pub netns: Option<String>,
}

/// The command typed at prompt `n` of agent `a`: quotes, a pipe, a glob and non-ASCII, so that a byte changed on
/// the way shows.
pub fn command_of(a: usize, n: usize) -> String {
    format!("printf '%s\\n' \"agent {a} event {n}\" | grep -c 'é*' # ✓ {a}/{n}")
}

impl Agent {
    /// Adds a host `agent-<index>` with address `10.77.<index / 250>.<index % 250 + 1>` and creates its
    /// agent token with the command line.
    pub fn register(server: &Server, binary: &Path, index: usize) -> Agent {
        let name = format!("agent-{index}");
        let ip = format!("10.77.{}.{}", index / 250, index % 250 + 1);
        let (status, body) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
        assert_eq!(status, StatusCode::CREATED, "add host {name}: {body}");
        let out = cli(server, &["hosts", "token", &name]);
        assert!(out.status.success(), "hosts token {name}: {out:?}");
        Agent {
            index,
            binary: binary.to_owned(),
            spool: tempfile::tempdir().expect("spool dir"),
            server: server.base.clone(),
            token: out.stdout.trim().to_owned(),
            ip,
            netns: None,
        }
    }

    /// The agent with this agent's environment and nothing inherited from the test's.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            // `ip netns exec` keeps the environment; the agent's background flusher inherits the namespace.
            Some(namespace) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", namespace]).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OMAUDIT_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("OMAUDIT_CONFIG", "")
            .env("OMAUDIT_SERVER", &self.server)
            .env("OMAUDIT_TOKEN", &self.token)
            .env("OMAUDIT_SPOOL_DIR", self.spool.path())
            .env("OMAUDIT_IP", &self.ip)
            .stdin(Stdio::null());
        cmd
    }

    /// One prompt: `omaudit-agent "$(history 1)"` for history line `n`. Returns its stderr (empty when all went
    /// well: the prompt form always exits 0 and says what went wrong in one line).
    pub fn prompt(&self, n: usize) -> String {
        let line = format!(
            "{n:>5}  user{} 2026-11-24 10:{:02}:{:02} {}",
            self.index,
            n / 60 % 60,
            n % 60,
            command_of(self.index, n)
        );
        let out = self.command().arg(line).stdout(Stdio::null()).output().expect("run the agent's prompt form");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `omaudit-agent flush` (waits for a running background flusher first).
    pub fn flush(&self) -> Output {
        self.command().arg("flush").output().expect("run omaudit-agent flush")
    }

    /// Flushes until nothing is left (exit 0), for at most `limit`.
    pub fn flush_until_empty(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let out = self.flush();
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "agent {}: the spool is still not empty after {limit:?}: {}{}\nagent log:\n{}",
                self.index,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The spool state file (there is one: every prompt runs under the test's uid).
    pub fn state(&self) -> Value {
        let path = self.files("state").pop().expect("a state file");
        let text = fs::read(&path).expect("read the state");
        // The state is one JSON value, possibly followed by the tail of an older, longer one.
        serde_json::Deserializer::from_slice(&text).into_iter::<Value>().next().expect("a state").expect("JSON")
    }

    pub fn stream(&self) -> String {
        self.state()["stream"].as_str().expect("stream").to_owned()
    }

    pub fn log(&self) -> String {
        self.files("log").iter().map(|p| fs::read_to_string(p).unwrap_or_default()).collect()
    }

    pub fn files(&self, extension: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.spool.path())
            .expect("read the spool dir")
            .map_while(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == extension))
            .collect();
        found.sort();
        found
    }
}

/// Runs `per_agent` prompts on every agent, one thread per agent; `done` counts finished prompts. Returns the
/// stderr lines the prompts printed (there should be none).
pub fn drive(agents: &[Arc<Agent>], per_agent: usize, done: &Arc<AtomicUsize>) -> Vec<thread::JoinHandle<Vec<String>>> {
    agents
        .iter()
        .map(|agent| {
            let (agent, done) = (agent.clone(), done.clone());
            thread::spawn(move || {
                let mut complaints = Vec::new();
                for n in 1..=per_agent {
                    let stderr = agent.prompt(n);
                    if !stderr.trim().is_empty() {
                        complaints.push(format!("agent {} prompt {n}: {}", agent.index, stderr.trim()));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                complaints
            })
        })
        .collect()
}

pub fn wait_for(done: &AtomicUsize, target: usize, limit: Duration) {
    let started = Instant::now();
    while done.load(Ordering::Relaxed) < target {
        assert!(
            started.elapsed() < limit,
            "only {} of {target} prompts ran in {limit:?}",
            done.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One stored row, as the checks need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub host_id: i64,
    pub source: String,
    pub stream: Option<String>,
    pub seq: Option<i64>,
    pub history_command: String,
}

const ROWS: &str = "SELECT host_id, source, stream, seq, history_command FROM server_history ORDER BY id";
const GAPS: &str = "SELECT COUNT(*) FROM audit_gaps";

/// Every audit row and the number of recorded gaps, read straight from the database (not through the server).
pub fn stored(database_url: &str) -> (Vec<Stored>, i64) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        macro_rules! read {
            ($conn:ty) => {{
                let mut conn = <$conn>::connect(database_url).await.expect("connect to the test database");
                let rows = sqlx::query_as::<_, Stored>(ROWS).fetch_all(&mut conn).await.expect("read server_history");
                let gaps: i64 = sqlx::query_scalar(GAPS).fetch_one(&mut conn).await.expect("count audit_gaps");
                let _ = conn.close().await;
                (rows, gaps)
            }};
        }
        match database_url.split(':').next() {
            Some("sqlite") => read!(sqlx::SqliteConnection),
            Some("mysql") => read!(sqlx::MySqlConnection),
            Some("postgres") => read!(sqlx::PgConnection),
            other => panic!("unexpected database scheme {other:?}"),
        }
    })
}

/// Asserts that each agent's stream holds exactly seq 1..=`per_agent`, once each, with the commands typed, that no
/// loss was reported, and that the hash chains verify. Returns the rows for further checks.
pub fn assert_exactly_once(
    server: &Server,
    database_url: &str,
    agents: &[Arc<Agent>],
    per_agent: usize,
    other_streams: &[&str],
) -> Vec<Stored> {
    let (rows, gaps) = stored(database_url);
    assert_eq!(gaps, 0, "an agent reported lost events");
    let mut by_stream: HashMap<&str, Vec<&Stored>> = HashMap::new();
    for row in rows.iter().filter(|r| r.source == "agent") {
        by_stream.entry(row.stream.as_deref().unwrap_or_default()).or_default().push(row);
    }
    for agent in agents {
        let state = agent.state();
        assert_eq!(state["next_seq"], json!(per_agent + 1), "agent {}: {state}", agent.index);
        assert_eq!(state["lost"], json!(0), "agent {}: {state}", agent.index);
        let stream = agent.stream();
        let got = by_stream.get(stream.as_str()).map(Vec::as_slice).unwrap_or_default();
        let mut seqs: HashMap<i64, usize> = HashMap::new();
        for row in got {
            *seqs.entry(row.seq.unwrap_or(-1)).or_default() += 1;
        }
        let duplicated: Vec<_> = seqs.iter().filter(|(_, n)| **n > 1).map(|(s, n)| (*s, *n)).collect();
        let missing: Vec<_> = (1..=per_agent as i64).filter(|s| !seqs.contains_key(s)).collect();
        assert!(
            duplicated.is_empty() && missing.is_empty() && got.len() == per_agent,
            "agent {} (stream {stream}): {} rows for {per_agent} events; {} seqs stored more than once (first: {:?}); \
             {} missing (first: {:?})",
            agent.index,
            got.len(),
            duplicated.len(),
            duplicated.iter().take(5).collect::<Vec<_>>(),
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
        );
        let host_ids: Vec<i64> = got.iter().map(|r| r.host_id).collect();
        assert!(host_ids.windows(2).all(|w| w[0] == w[1]), "agent {}: rows on several hosts", agent.index);
        for row in got {
            let seq = row.seq.expect("agent rows have a seq") as usize;
            assert_eq!(row.history_command, command_of(agent.index, seq), "agent {} seq {seq}", agent.index);
        }
    }
    let known: Vec<String> = agents.iter().map(|a| a.stream()).collect();
    let strangers: Vec<&&str> =
        by_stream.keys().filter(|s| !known.iter().any(|k| k == *s) && !other_streams.contains(s)).collect();
    assert!(strangers.is_empty(), "rows in streams no agent sent: {strangers:?}");
    let verify = cli(server, &["audit", "verify"]);
    assert!(verify.status.success() && verify.stdout.contains(" 0 problems"), "audit verify: {verify:?}");
    rows
}
