//! The `func` backend: XML-RPC over HTTPS with mutual TLS to each host's funcd (`https://<address>:<port>/`),
//! `command.run(cmd)` → `[rc, stdout, stderr]` and `copyfile.copyfile(path, base64, mode, uid, gid)` → 1 copied,
//! 0 unchanged, -1 failed. Certificates are checked against the certmaster CA and the host's name in the CN
//! ([`tls`]).
//!
//! Func splits `cmd` on whitespace and runs the words without a shell, so an argument vector is sent as its words
//! joined by single spaces, and an argument that is empty or holds whitespace is refused (it would be split).
//! Cancellation closes the connection; Func has no way to stop a command it has started.

mod tls;
// pub(crate): re-exported for the fuzz targets by `crate::fuzzing`.
pub(crate) mod xmlrpc;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::ROption;
use omserver_plugin_api::{HostResult, HostStatus};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing::debug;

use super::{config::FuncConfig, failed, millis, output::cap, per_host, unreachable, Host, Limits, Report};
use xmlrpc::{Param, RpcError, Value};

#[derive(Debug)]
pub struct FuncBackend {
    config: FuncConfig,
    limits: Limits,
    /// Loaded once; a broken file fails every host with the reason (and `check` says it).
    identity: Result<Arc<tls::Identity>, String>,
}

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// Nothing answered in time, or the connection was refused: the host is unreachable.
    #[error("{0}")]
    Unreachable(String),
    /// The host answered but the call failed (TLS refused, a fault, a malformed answer).
    #[error("{0}")]
    Failed(String),
}

impl FuncBackend {
    pub fn new(config: FuncConfig, limits: Limits) -> FuncBackend {
        let identity = tls::Identity::load(&config.ca_file, &config.cert_file, &config.key_file).map(Arc::new);
        FuncBackend { config, limits, identity }
    }

    pub async fn run(&self, hosts: &[Host], argv: &[String], report: &Report) -> Vec<HostResult> {
        let command = match command_line(argv) {
            Ok(command) => command,
            Err(refusal) => return hosts.iter().map(|h| report.done(failed(&h.name, &refusal, None))).collect(),
        };
        per_host(hosts, self.config.max_parallel, report, |host| {
            let command = command.clone();
            async move {
                let started = Instant::now();
                let body = xmlrpc::method_call("command.run", &[Param::Str(&command)]);
                match self.call(host, &body).await {
                    Ok(value) => self.command_result(host, value, started),
                    Err(e) => self.error_result(host, e, started),
                }
            }
        })
        .await
    }

    pub async fn copy_file(
        &self,
        hosts: &[Host],
        source: &Path,
        dest: &str,
        mode: u32,
        report: &Report,
    ) -> Vec<HostResult> {
        let refuse = |message: String| hosts.iter().map(|h| report.done(failed(&h.name, &message, None))).collect();
        if !dest.starts_with('/') || !dest.chars().all(xmlrpc::xml_char_ok) {
            return refuse(format!("the destination {dest:?} must be an absolute path without control characters"));
        }
        let data = match tokio::fs::read(source).await {
            Ok(data) => data,
            Err(e) => return refuse(format!("cannot read {}: {e}", source.display())),
        };
        // Func's copyfile takes the data as base64 text, the mode as a number, and chowns to uid/gid (0 as Func did).
        let body = xmlrpc::method_call(
            "copyfile.copyfile",
            &[Param::Str(dest), Param::Base64Text(&data), Param::Int(i64::from(mode)), Param::Int(0), Param::Int(0)],
        );
        let body = Arc::new(body);
        let bytes = data.len();
        per_host(hosts, self.config.max_parallel, report, |host| {
            let body = body.clone();
            async move {
                let started = Instant::now();
                let ok = |text: String| HostResult {
                    host: host.name.as_str().into(),
                    status: HostStatus::Ok,
                    rc: ROption::RSome(0),
                    stdout: text.into(),
                    stderr: "".into(),
                    duration_ms: millis(started.elapsed()),
                };
                match self.call(host, &body).await {
                    Ok(Value::Int(1)) => ok(format!("copied {bytes} bytes to {dest}\n")),
                    Ok(Value::Int(0)) => ok(format!("unchanged: {dest} already has these {bytes} bytes and mode\n")),
                    Ok(Value::Int(-1)) => failed(
                        &host.name,
                        &format!("funcd could not write {dest} (copyfile returned -1)"),
                        Some(started.elapsed()),
                    ),
                    Ok(other) => {
                        failed(&host.name, &format!("unexpected copyfile answer {other:?}"), Some(started.elapsed()))
                    }
                    Err(e) => self.error_result(host, e, started),
                }
            }
        })
        .await
    }

    /// The CA, certificate and key files are readable, parse, and the key belongs to the certificate.
    pub async fn check(&self) -> Result<String, String> {
        match &self.identity {
            Ok(_) => Ok(format!(
                "certificates loaded: CA {}, client certificate {} with its key {}; funcd port {}",
                self.config.ca_file.display(),
                self.config.cert_file.display(),
                self.config.key_file.display(),
                self.config.port
            )),
            Err(e) => Err(e.clone()),
        }
    }

    fn command_result(&self, host: &Host, value: Value, started: Instant) -> HostResult {
        let limit = self.limits.output_limit_bytes;
        let Value::Array(items) = value else {
            return failed(&host.name, &format!("unexpected command.run answer {value:?}"), Some(started.elapsed()));
        };
        match items.as_slice() {
            [Value::Int(rc), Value::Str(stdout), Value::Str(stderr)] => {
                let rc = i32::try_from(*rc).unwrap_or(i32::MAX);
                HostResult {
                    host: host.name.as_str().into(),
                    status: if rc == 0 { HostStatus::Ok } else { HostStatus::Failed },
                    rc: ROption::RSome(rc),
                    stdout: cap(stdout, limit).into(),
                    stderr: cap(stderr, limit).into(),
                    duration_ms: millis(started.elapsed()),
                }
            }
            other => failed(&host.name, &format!("unexpected command.run answer {other:?}"), Some(started.elapsed())),
        }
    }

    fn error_result(&self, host: &Host, error: CallError, started: Instant) -> HostResult {
        debug!(host = %host.name, error = %error, "func call failed");
        match error {
            CallError::Unreachable(message) => unreachable(&host.name, &message, Some(started.elapsed())),
            CallError::Failed(message) => failed(&host.name, &message, Some(started.elapsed())),
        }
    }

    /// One XML-RPC call to `host`: connect and TLS within `connect_timeout_secs`, the rest within the command
    /// timeout.
    async fn call(&self, host: &Host, body: &str) -> Result<Value, CallError> {
        let identity = self.identity.as_ref().map_err(|e| CallError::Failed(e.clone()))?;
        let client = identity.client_for(&host.name).map_err(CallError::Failed)?;
        let port = self.config.port;
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_secs.max(1));
        let where_ = format!("{}:{port}", host.address);
        // The verifier checks the CN against the inventory name itself; this name only decides SNI.
        let server_name = match host.address.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.address.clone())
                .map_err(|_| CallError::Failed(format!("{:?} is not a host address", host.address)))?,
        };
        let connect = async {
            let tcp = TcpStream::connect((host.address.as_str(), port))
                .await
                .map_err(|e| CallError::Unreachable(format!("cannot connect to funcd at {where_}: {e}")))?;
            tokio_rustls::TlsConnector::from(client)
                .connect(server_name, tcp)
                .await
                .map_err(|e| CallError::Failed(format!("TLS with funcd at {where_} failed: {e}")))
        };
        let started = Instant::now();
        let mut tls = tokio::time::timeout(connect_timeout, connect).await.map_err(|_| {
            CallError::Unreachable(format!("funcd at {where_} did not complete TLS within {connect_timeout:?}"))
        })??;
        let exchange = async {
            let head = format!(
                "POST /RPC2 HTTP/1.1\r\nHost: {where_}\r\nUser-Agent: omserver\r\nContent-Type: text/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let io = |e: std::io::Error| CallError::Failed(format!("talking to funcd at {where_}: {e}"));
            tls.write_all(head.as_bytes()).await.map_err(io)?;
            tls.write_all(body.as_bytes()).await.map_err(io)?;
            tls.flush().await.map_err(io)?;
            read_response(&mut tls, self.response_limit()).await.map_err(CallError::Failed)
        };
        // The whole call, connection included, stays within the command timeout.
        let timeout = self.limits.command_timeout;
        let left = timeout.saturating_sub(started.elapsed());
        let answer = tokio::time::timeout(left, exchange).await.map_err(|_| {
            CallError::Failed(format!(
                "timed out after {timeout:?} waiting for funcd at {where_} (the command may still run there)"
            ))
        })??;
        xmlrpc::parse_response(&answer).map_err(|e| match e {
            RpcError::Fault { .. } => CallError::Failed(format!("funcd at {where_}: {e}")),
            RpcError::Malformed(m) => CallError::Failed(format!("funcd at {where_} sent a bad answer: {m}")),
        })
    }

    /// Two capped outputs, XML-escaped, and room for the envelope.
    fn response_limit(&self) -> usize {
        self.limits.output_limit_bytes.saturating_mul(16).saturating_add(1 << 20)
    }
}

/// `argv` as the one string Func's `command.run` takes, or why it cannot be sent.
fn command_line(argv: &[String]) -> Result<String, String> {
    if argv.is_empty() {
        return Err("empty command".to_owned());
    }
    for (i, arg) in argv.iter().enumerate() {
        if arg.is_empty() {
            return Err(format!("argument {i} is empty: Func's command.run splits the command on whitespace and cannot pass an empty argument; nothing was sent"));
        }
        // Python's str.split() also splits at the separators U+001C..U+001F.
        if let Some(c) = arg.chars().find(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(c)) {
            return Err(format!(
                "argument {i} ({arg:?}) holds whitespace ({c:?}): Func's command.run splits the command on \
                 whitespace, so it would arrive as several arguments; nothing was sent"
            ));
        }
        if let Some(c) = arg.chars().find(|&c| !xmlrpc::xml_char_ok(c) || c.is_control()) {
            return Err(format!(
                "argument {i} holds the control character {c:?}, which XML-RPC cannot carry; nothing was sent"
            ));
        }
    }
    Ok(argv.join(" "))
}

/// Reads an HTTP/1.x response (the connection is closed after it) and returns the body of a 200, at most `limit`
/// bytes of it.
async fn read_response<R: AsyncReadExt + Unpin>(reader: &mut R, limit: usize) -> Result<String, String> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut header_end = None;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(n) => n,
            // funcd (Python's ssl) closes without close_notify; the length tells whether all arrived.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        if data.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        if header_end.is_none() {
            header_end = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(end) = header_end {
            if let Some(length) = content_length(&data[..end]) {
                if data.len() >= end + length {
                    data.truncate(end + length);
                    break;
                }
            }
        }
    }
    let end = header_end.ok_or("the connection closed before an HTTP answer")?;
    let head = String::from_utf8_lossy(&data[..end]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("funcd answered {status:?}"));
    }
    let body = &data[end..];
    if let Some(length) = content_length(&data[..end]) {
        if body.len() < length {
            return Err(format!("the answer was cut off after {} of {length} bytes", body.len()));
        }
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err("funcd sent a chunked answer, which Func never does".to_owned());
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_owned())
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn argument_vectors_func_would_split_are_refused() {
        assert_eq!(command_line(&argv(&["ls", "-l", "/tmp"])).unwrap(), "ls -l /tmp");
        for bad in ["a b", "tab\there", "new\nline", "nbsp\u{a0}", "sep\u{1f}x", "ideo\u{3000}", ""] {
            let refusal = command_line(&argv(&["echo", bad])).unwrap_err();
            assert!(refusal.contains("nothing was sent"), "{bad:?}: {refusal}");
        }
        assert!(command_line(&argv(&["echo", "nul\u{0}"])).is_err());
        assert!(command_line(&[]).is_err());
        // Shell characters are harmless: Func runs no shell.
        assert_eq!(command_line(&argv(&["echo", ";$(id)|`x`"])).unwrap(), "echo ;$(id)|`x`");
    }

    #[tokio::test]
    async fn responses_are_read_by_length_and_bounded() {
        let answer = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(read_response(&mut &answer[..], 1000).await.unwrap(), "hello");
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert!(read_response(&mut &short[..], 1000).await.unwrap_err().contains("cut off"));
        let error = b"HTTP/1.0 500 Internal\r\n\r\n";
        assert!(read_response(&mut &error[..], 1000).await.unwrap_err().contains("500"));
        let big = [b"HTTP/1.0 200 OK\r\n\r\n".as_slice(), &[b'x'; 5000]].concat();
        assert!(read_response(&mut &big[..], 1000).await.unwrap_err().contains("larger"));
    }
}
