//! End-to-end: the built binary against real TCP listeners on 127.0.0.1 port 0, with the spool in a temp dir.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_omaudit-agent");
const TOKEN: &str = "test-token-1";
/// The prompt must return "well under 50 ms"; 200 ms leaves room for a loaded 2-core machine.
const PROMPT_BUDGET: Duration = Duration::from_millis(200);

/// A temp spool dir and a config file pointing at `server`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let setup = Setup { dir: tempfile::tempdir().unwrap() };
        setup.point_at("");
        setup
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.spool_dir().join(format!("{}.log", uid()))
    }

    /// Rewrites the config file for another server ("" = not configured).
    fn point_at(&self, server: &str) {
        let mut text = format!(
            "spool_dir = {:?}\nconnect_timeout_ms = 500\nread_timeout_ms = 500\n",
            self.spool_dir().to_str().unwrap()
        );
        if !server.is_empty() {
            text.push_str(&format!("server = {server:?}\ntoken = {TOKEN:?}\n"));
        }
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn command(&self) -> Command {
        let mut command = Command::new(AGENT);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OMAUDIT_CONFIG", self.config_path())
            .stdin(Stdio::null());
        command
    }

    /// Runs the prompt form with one argument; returns the output and how long the shell would have waited.
    fn prompt(&self, history_line: &str) -> (Output, Duration) {
        let start = Instant::now();
        let output = self.command().arg(history_line).output().unwrap();
        (output, start.elapsed())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn spooled(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.spool_dir().join(format!("{}.spool", uid()))) {
            Ok(text) => {
                text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

fn uid() -> u32 {
    omaudit_agent::identity::real_uid()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_quiet_prompt(output: &Output, took: Duration) {
    assert!(output.status.success(), "prompt exit status {:?}", output.status);
    assert!(output.stdout.is_empty(), "stdout: {}", text(&output.stdout));
    assert!(output.stderr.is_empty(), "stderr: {}", text(&output.stderr));
    assert!(took < PROMPT_BUDGET, "the prompt waited {took:?}");
}

/// A port nothing listens on.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Accepts connections and never answers (holds them open until the test process ends).
fn hanging_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(64).flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

/// One parsed request.
#[derive(Debug)]
struct Request {
    request_line: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// Answers every request with `status` and, for 200, the acknowledgement of all its events; sends each parsed
/// request to the returned channel.
fn http_server(status: u16) -> (String, Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().take(64).flatten() {
            let tx = tx.clone();
            thread::spawn(move || serve_connection(stream, status, tx));
        }
    });
    (format!("http://{addr}"), rx)
}

fn serve_connection(stream: TcpStream, status: u16, tx: Sender<Request>) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Keep-alive: several requests per connection.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let (mut length, mut authorization, mut content_type) = (0usize, None, None);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "authorization" => authorization = Some(value.trim().to_owned()),
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let events = body["events"].as_array().map_or(0, Vec::len);
        let answer = if status == 200 {
            format!(r#"{{"stored":{events},"duplicates":0,"rejected":[]}}"#)
        } else {
            r#"{"error":"no"}"#.to_owned()
        };
        let _ =
            tx.send(Request { request_line: request_line.trim_end().to_owned(), authorization, content_type, body });
        let reason = if status == 200 { "OK" } else { "Refused" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Waits until `check` holds (polling), at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    check()
}

fn warm_up(setup: &Setup) {
    // The first exec of a freshly linked binary pays for page-cache misses; that is not the prompt's cost.
    for _ in 0..3 {
        setup.run(&["--version"]);
    }
}

#[test]
fn server_down_then_hanging_then_up() {
    let setup = Setup::new();
    warm_up(&setup);

    // (b) Closed port: the prompt returns at once and the event stays spooled.
    setup.point_at(&closed_port());
    let (output, took) = setup.prompt("  17  root 2026-11-24 10:00:00 ls  -l '*.txt'");
    assert_quiet_prompt(&output, took);
    let flush = setup.run(&["flush"]); // waits for the background flusher, then fails itself
    assert_eq!(flush.status.code(), Some(1), "{}", text(&flush.stdout));
    assert!(text(&flush.stdout).contains("cannot reach"), "{}", text(&flush.stdout));
    assert_eq!(setup.spooled().len(), 1);

    // (c) A server that accepts and never answers: same, and repeated prompts do not pile up waiting.
    setup.point_at(&hanging_server());
    for (i, line) in
        ["  18  root 2026-11-24 10:00:01 cat /etc/hosts", "  19  root 2026-11-24 10:00:02 echo ✓"].iter().enumerate()
    {
        let (output, took) = setup.prompt(line);
        assert_quiet_prompt(&output, took);
        assert_eq!(setup.spooled().len(), 2 + i);
    }
    let status = setup.run(&["status"]);
    assert!(status.status.success());
    assert!(text(&status.stdout).contains("spooled:       3"), "{}", text(&status.stdout));

    // (a) The server is back: a foreground flush (after the hanging background one times out) delivers all.
    let (server, requests) = http_server(200);
    setup.point_at(&server);
    let spooled = setup.spooled();
    let flush = setup.run(&["flush"]);
    assert_eq!(flush.status.code(), Some(0), "{}{}", text(&flush.stdout), text(&flush.stderr));
    assert!(text(&flush.stdout).contains("0 event(s) and 0 gap(s) still spooled"), "{}", text(&flush.stdout));
    assert!(setup.spooled().is_empty());

    let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(request.request_line, "POST /api/audit/events HTTP/1.1");
    assert_eq!(request.authorization.as_deref(), Some(&*format!("Bearer {TOKEN}")));
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    let sent = request.body["events"].as_array().unwrap().clone();
    assert_eq!(sent.len(), 3);
    assert_eq!(request.body["gaps"], serde_json::json!([]));
    for (sent, spooled) in sent.iter().zip(&spooled) {
        let mut expected = spooled.clone();
        // The spool leaves `ip` empty for the flusher to fill with the route to the server.
        assert_eq!(expected["ip"], "");
        expected["ip"] = Value::from("127.0.0.1");
        assert_eq!(sent, &expected);
    }
    let commands: Vec<&str> = sent.iter().map(|e| e["command"].as_str().unwrap()).collect();
    assert_eq!(commands, vec!["ls  -l '*.txt'", "cat /etc/hosts", "echo ✓"]);
    assert_eq!(sent.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
    let event = &sent[0];
    assert_eq!(event["stream"].as_str().unwrap().len(), 32);
    assert_eq!((event["history_id"].as_u64(), event["user"].as_str()), (Some(17), Some("root")));
    assert_eq!(event["time"], "2026-11-24 10:00:00");
    assert_eq!(event["uid"].as_u64(), Some(u64::from(uid())));
    assert_eq!(event["tty"], "", "stdin is not a terminal here");

    // With the server up, the prompt's own background flusher delivers.
    let (output, took) = setup.prompt("  20  root 2026-11-24 10:00:03 uptime");
    assert_quiet_prompt(&output, took);
    let request = requests.recv_timeout(Duration::from_secs(5)).expect("background flusher posted");
    assert_eq!(request.body["events"][0]["command"], "uptime");
    assert_eq!(request.body["events"][0]["seq"], 4);
    assert!(eventually(Duration::from_secs(5), || setup.spooled().is_empty()));
    let status = setup.run(&["status"]);
    assert!(text(&status.stdout).contains("last error:    none"), "{}", text(&status.stdout));
}

#[test]
fn empty_enter_repeats_are_not_recorded_twice_and_unquoted_form_works() {
    let setup = Setup::new();
    for _ in 0..3 {
        let output = setup.command().args(["5", "alice", "2026-11-24", "10:00:00", "ls", "-l"]).output().unwrap();
        assert!(output.status.success() && output.stderr.is_empty(), "{}", text(&output.stderr));
    }
    let spooled = setup.spooled();
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0]["command"], "ls -l");
    assert_eq!(spooled[0]["user"], "alice");
}

#[test]
fn refused_token_keeps_events_and_says_so() {
    let setup = Setup::new();
    let (server, _requests) = http_server(401);
    setup.point_at(&server);
    let (output, took) = setup.prompt("  1  root 2026-11-24 10:00:00 id");
    assert_quiet_prompt(&output, took);
    let flush = setup.run(&["flush"]);
    assert_eq!(flush.status.code(), Some(1));
    assert!(text(&flush.stdout).contains("token refused (HTTP 401)"), "{}", text(&flush.stdout));
    assert_eq!(setup.spooled().len(), 1);
    let status = setup.run(&["status"]);
    assert!(text(&status.stdout).contains("last error:    token refused"), "{}", text(&status.stdout));
}

#[test]
fn history_not_configured_is_logged_not_shown() {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.spool_dir()).unwrap();
    let (output, took) = setup.prompt("  173  ls -l");
    assert_quiet_prompt(&output, took);
    let log = std::fs::read_to_string(setup.log_path()).unwrap();
    assert!(log.contains("History not configured"), "{log}");
    assert!(setup.spooled().is_empty());
}

#[test]
fn unwritable_spool_is_one_stderr_line_and_exit_0() {
    let setup = Setup::new();
    let file = setup.dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let output = setup
        .command()
        .env("OMAUDIT_SPOOL_DIR", file.join("spool"))
        .arg("  1  root 2026-11-24 10:00:00 ls")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("omaudit-agent: spool {} not writable: ", file.join("spool").display())));
}

#[test]
fn bad_config_still_spools_at_the_prompt_but_fails_flush_and_status() {
    let setup = Setup::new();
    std::fs::write(setup.config_path(), "server = [\n").unwrap();
    let output = setup
        .command()
        .env("OMAUDIT_SPOOL_DIR", setup.spool_dir())
        .arg("  1  root 2026-11-24 10:00:00 ls")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("omaudit-agent: config "), "{stderr}");
    assert_eq!(setup.spooled().len(), 1, "the command is kept");
    assert_eq!(setup.run(&["flush"]).status.code(), Some(2));
    assert_eq!(setup.run(&["status"]).status.code(), Some(2));
}

#[test]
fn not_configured_spools_and_flush_says_so() {
    let setup = Setup::new();
    let (output, took) = setup.prompt("  1  root 2026-11-24 10:00:00 ls");
    assert_quiet_prompt(&output, took);
    let flush = setup.run(&["flush"]);
    assert_eq!(flush.status.code(), Some(1));
    assert!(text(&flush.stdout).contains("not configured: server missing"), "{}", text(&flush.stdout));
    assert_eq!(setup.spooled().len(), 1);
}

#[test]
fn concurrent_prompt_processes_keep_every_line_intact() {
    let setup = Setup::new();
    let children: Vec<_> = (1..=24)
        .map(|i| {
            let command = format!("echo {i} {}", "x".repeat(5000));
            setup
                .command()
                .arg(format!("  {i}  root 2026-11-24 10:00:00 {command}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success() && output.stderr.is_empty(), "{}", text(&output.stderr));
    }
    let spooled = setup.spooled();
    assert_eq!(spooled.len(), 24);
    let mut seqs: Vec<u64> = spooled.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=24).collect::<Vec<_>>());
    let mut ids: Vec<u64> = spooled.iter().map(|e| e["history_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=24).collect::<Vec<_>>());
}

#[test]
fn profile_names_the_agent() {
    let setup = Setup::new();
    let output = setup.run(&["profile"]);
    assert!(output.status.success());
    let snippet = text(&output.stdout);
    let agent = Path::new(AGENT).canonicalize().unwrap();
    assert!(
        snippet.contains(&format!("PROMPT_COMMAND='history -a; {} \"$(history 1)\"'", agent.display())),
        "{snippet}"
    );
    let output = setup.run(&["profile", "--path", "/usr/local/bin/omaudit-agent"]);
    assert!(text(&output.stdout).contains("/usr/local/bin/omaudit-agent \"$(history 1)\""));
    assert_eq!(setup.run(&["profile", "--path", "/opt/a b"]).status.code(), Some(2));
}
