//! Delivery: the flusher that moves spooled events to the server, off the prompt's path.
//!
//! The prompt only appends and starts `omaudit-agent flush --quiet` detached ([`spawn_background`]). The flusher
//! becomes *the* flusher of its uid by taking `<uid>.flush.lock` without waiting (a second one exits at once: the
//! first loops until the spool is empty), then sends batches:
//!
//! `POST {server}/api/audit/events`, `Authorization: Bearer {token}`, `Content-Type: application/json`, body
//! [`Submission`] `{"events":[…],"gaps":[…]}` with at most `batch_max` events (and about [`MAX_BATCH_BYTES`]).
//!
//! | answer | what the flusher does |
//! | --- | --- |
//! | 200 + [`Ack`] JSON | removes every event of the batch from the spool, logs rejected ones, forgets the gaps sent |
//! | 200, body not an `Ack` | keeps everything (a proxy or a wrong URL must not make events vanish), stops |
//! | 401 / 403 | keeps everything, last error "token refused", stops |
//! | 413 | halves the batch and retries; a single event still too large is dropped *and reported as a gap* |
//! | 5xx, other, timeout, refused | keeps everything, stops until the next prompt or `flush` |
//!
//! **Architecture Invariant:** nothing leaves the spool before a 200 with a well-formed acknowledgement, and the
//! spool lock is never held while waiting on the network.
//!
//! The HTTP client is `ureq` 3 with rustls rather than a hand-written HTTP/1.1 client: one code path for http and
//! https, chunked and keep-alive answers handled, and separate connect/send/receive timeouts, for about 1.5 MB more
//! binary. The prompt path links it but never runs it; its measured cost is in agent/README.md.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{Ack, Gap, Submission};
use crate::local_log::LocalLog;
use crate::spool::{Batch, Spool};

/// Soft cap on the spooled bytes of one batch (one event is always sent, whatever its size).
pub const MAX_BATCH_BYTES: u64 = 1 << 20;
/// The path events are posted to, under the configured server URL.
pub const EVENTS_PATH: &str = "/api/audit/events";
/// Acknowledged batches are removed from the spool once they cover this many bytes (and at the end).
const COMPACT_BYTES: u64 = 4 << 20;
/// Largest answer body read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// An HTTP answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body as text (empty if unreadable, except for 200 where that is an error).
    pub body: String,
}

/// Sends one request body to the events endpoint. `Err` is a transport failure (no usable answer).
pub trait Transport {
    /// Posts `body` (JSON) and returns the answer.
    fn post(&self, body: Vec<u8>) -> Result<Answer>;
}

/// The real transport: ureq with the configured timeouts, no proxy, no redirects.
pub struct HttpTransport {
    agent: ureq::Agent,
    server: String,
    url: String,
    authorization: String,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpTransport").field("url", &self.url).finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// Builds the client from the configuration; [`Error::NotConfigured`] without server or token.
    pub fn new(config: &Config) -> Result<HttpTransport> {
        let (server, token) = config.endpoint()?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| Error::io("read", ca_file, e))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::Config { path: ca_file.clone(), message: "no PEM certificate in it".into() });
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let connect = Some(config.connect_timeout);
        let read = Some(config.read_timeout);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Audit traffic goes straight to the server: a proxy variable set by the audited user is ignored.
            .proxy(None)
            // Never carry the bearer token to wherever a redirect points.
            .max_redirects(0)
            .timeout_resolve(connect)
            .timeout_connect(connect)
            .timeout_send_request(read)
            .timeout_send_body(read)
            .timeout_recv_response(read)
            .timeout_recv_body(read)
            .user_agent(concat!("omaudit-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(HttpTransport {
            agent,
            server: server.to_owned(),
            url: format!("{server}{EVENTS_PATH}"),
            authorization: format!("Bearer {token}"),
        })
    }
}

impl Transport for HttpTransport {
    fn post(&self, body: Vec<u8>) -> Result<Answer> {
        let transport = |e: ureq::Error| Error::Transport { server: self.server.clone(), message: e.to_string() };
        let mut response = self
            .agent
            .post(&self.url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = match response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string() {
            Ok(text) => text,
            // Without the acknowledgement we cannot know what was stored: keep everything.
            Err(e) if status == 200 => return Err(transport(e)),
            Err(_) => String::new(),
        };
        Ok(Answer { status, body })
    }
}

/// How one flush behaves.
#[derive(Debug, Clone, Copy)]
pub struct FlushOptions {
    /// Wait for a running flusher to finish (foreground `flush`) instead of leaving the work to it.
    pub wait_for_lock: bool,
    /// Events per request.
    pub batch_max: usize,
}

/// What one flush did.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Another flusher was running and `wait_for_lock` was false: nothing done.
    pub skipped: bool,
    /// Requests answered 200.
    pub batches: usize,
    /// Events the server newly stored.
    pub stored: u64,
    /// Events the server already had.
    pub duplicates: u64,
    /// Events the server refused for good (logged).
    pub rejected: usize,
    /// Gap reports acknowledged.
    pub gaps_reported: usize,
    /// Single events too large for the server (dropped, reported as gaps, logged).
    pub too_large: usize,
    /// Damaged spool lines dropped (logged).
    pub damaged: usize,
    /// Events still spooled at the end.
    pub remaining: u64,
    /// Gaps still unreported at the end.
    pub pending_gaps: usize,
    /// Why the flush stopped early, if it did.
    pub error: Option<Error>,
}

/// Sends batches until the spool is empty or a request fails.
///
/// `ip` fills events spooled without an address. Local failures (the spool itself) are `Err`; delivery failures
/// end up in [`FlushReport::error`] and in the state's last error.
pub fn flush(
    spool: &Spool,
    transport: &dyn Transport,
    ip: &str,
    options: FlushOptions,
    log: &LocalLog,
) -> Result<FlushReport> {
    let mut report = FlushReport::default();
    let Some(mut flush_lock) = spool.flush_lock(options.wait_for_lock)? else {
        report.skipped = true;
        return Ok(report);
    };
    let batch_max = options.batch_max.max(1);
    let mut limit = batch_max;
    // Batches the server acknowledged but that are still in the spool: removed together, with one rewrite per
    // COMPACT_BYTES rather than one per batch (a full spool would otherwise be copied once per batch).
    let mut acked: Option<Batch> = None;
    loop {
        let start = acked.as_ref().map_or(0, Batch::end);
        let skip = acked.as_ref().map_or(&[][..], |b| &b.gaps[..]);
        let batch = spool.read_batch(start, skip, limit, MAX_BATCH_BYTES)?;
        if batch.is_empty() {
            if let Some(done) = acked.take() {
                spool.remove(&done, Vec::new())?;
                continue;
            }
            // Let go, then look again: a prompt that appended while we held the lock saw it taken and started no
            // flusher, so its events are ours unless another flusher took over meanwhile.
            drop(flush_lock);
            if !spool.pending()? {
                break;
            }
            match spool.flush_lock(false)? {
                Some(lock) => {
                    flush_lock = lock;
                    continue;
                }
                None => break,
            }
        }
        for line in &batch.corrupt {
            log.write(&format!("dropped a damaged spool line: {line}"));
        }
        report.damaged += batch.corrupt.len();
        if batch.events.is_empty() && batch.gaps.is_empty() {
            acked = Some(joined(acked, batch));
            continue;
        }
        let mut events = batch.events.clone();
        for event in events.iter_mut().filter(|e| e.ip.is_empty()) {
            event.ip = ip.to_owned();
        }
        let body = serde_json::to_vec(&Submission { events: &events, gaps: &batch.gaps })
            .map_err(|e| Error::io("encode batch from", spool.path(), e.into()))?;
        let answer = match transport.post(body) {
            Ok(answer) => answer,
            Err(err) => {
                report.error = Some(err);
                break;
            }
        };
        match answer.status {
            200 => match serde_json::from_str::<Ack>(&answer.body) {
                Ok(ack) => {
                    record_ack(&ack, &batch, log, &mut report);
                    let done = joined(acked.take(), batch);
                    if done.end() >= COMPACT_BYTES {
                        spool.remove(&done, Vec::new())?;
                    } else {
                        acked = Some(done);
                    }
                }
                Err(e) => {
                    report.error = Some(Error::BadAck(format!("{e}: {}", snippet(&answer.body))));
                    break;
                }
            },
            401 | 403 => {
                report.error = Some(Error::TokenRefused(answer.status));
                break;
            }
            413 if batch.events.len() > 1 => limit = batch.events.len() / 2,
            413 if batch.events.len() == 1 => {
                let event = &batch.events[0];
                log.write(&format!(
                    "event too large for the server (HTTP 413), dropped and reported as a gap: stream={} seq={} \
                     history_id={} user={} time={} command={}",
                    event.stream, event.seq, event.history_id, event.user, event.time, event.command
                ));
                let gap = Gap {
                    stream: event.stream.clone(),
                    from_seq: event.seq,
                    to_seq: event.seq,
                    reason: "event too large".into(),
                };
                // Remove it now (with what was acknowledged before) so the gap is in the state for the next request.
                spool.remove(&joined(acked.take(), batch.without_gaps()), vec![gap])?;
                report.too_large += 1;
            }
            status => {
                report.error = Some(Error::Server { status, body: snippet(&answer.body) });
                break;
            }
        }
    }
    if let Some(done) = acked.take() {
        spool.remove(&done, Vec::new())?;
    }
    if let Some(err) = &report.error {
        let text = err.to_string();
        if spool.note_error(Some(&text))? {
            log.write(&format!("delivery failed, events stay spooled: {text}"));
        }
    }
    let status = spool.status()?;
    report.remaining = status.spooled;
    report.pending_gaps = status.state.gaps.len();
    Ok(report)
}

/// `acked` followed by `next` (which was read from where `acked` ends).
fn joined(acked: Option<Batch>, next: Batch) -> Batch {
    match acked {
        Some(mut acked) => {
            acked.extend(next);
            acked
        }
        None => next,
    }
}

fn record_ack(ack: &Ack, batch: &Batch, log: &LocalLog, report: &mut FlushReport) {
    report.batches += 1;
    report.stored += ack.stored;
    report.duplicates += ack.duplicates;
    report.rejected += ack.rejected.len();
    report.gaps_reported += batch.gaps.len();
    for rejected in &ack.rejected {
        let matching = batch
            .events
            .iter()
            .filter(|e| e.seq == rejected.seq && rejected.stream.as_deref().is_none_or(|s| s == e.stream));
        let mut found = false;
        for event in matching {
            found = true;
            log.write(&format!(
                "rejected by the server ({}): stream={} seq={} history_id={} user={} time={} command={}",
                rejected.reason, event.stream, event.seq, event.history_id, event.user, event.time, event.command
            ));
        }
        if !found {
            log.write(&format!(
                "rejected by the server ({}): seq={} (not in the batch)",
                rejected.reason, rejected.seq
            ));
        }
    }
    let answered = ack.stored + ack.duplicates + ack.rejected.len() as u64;
    if answered != batch.events.len() as u64 {
        log.write(&format!(
            "acknowledgement counts {answered} events for a batch of {} (stored {}, duplicates {}, rejected {})",
            batch.events.len(),
            ack.stored,
            ack.duplicates,
            ack.rejected.len()
        ));
    }
}

fn snippet(body: &str) -> String {
    let one_line: String = body.chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
    one_line.trim().to_owned()
}

/// The address this host reports: the local end of the route to the server. A UDP socket is "connected" (which
/// only selects a route; no packet is sent). `None` when the server cannot be resolved or routed to.
pub fn detect_ip(server: &str) -> Option<IpAddr> {
    let target = server_socket_addr(server)?;
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Resolves the host and port of an `http(s)://host[:port]/…` URL.
fn server_socket_addr(server: &str) -> Option<SocketAddr> {
    let (default_port, rest) = if let Some(rest) = server.strip_prefix("https://") {
        (443, rest)
    } else {
        (80, server.strip_prefix("http://")?)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (host, port).to_socket_addrs().ok()?.next()
}

/// Starts `<exe> flush --quiet` in its own session with null stdio, and does not wait for it.
///
/// `setsid` keeps it alive when the terminal closes and out of the terminal's signals; null stdio keeps it from
/// holding the terminal or a caller's pipes open. The prompt exits right after, so the child is re-parented and reaped by init.
pub fn spawn_background(exe: &Path) -> std::io::Result<()> {
    let mut command = Command::new(exe);
    command.args(["flush", "--quiet"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // Do not pin the shell's working directory (an unmount would fail while the flusher waits on the network).
    command.current_dir("/");
    // SAFETY: the closure runs in the forked child before exec and only calls setsid, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map(drop)
}

#[cfg(test)]
mod tests;
