//! The salt-api (rest_cherrypy) client: one HTTP client (connections reused), one login whose token is reused
//! until shortly before it expires, `POST /` to publish a job, `GET /events` to read the returns.
//!
//! The password goes only into the body of `POST /login`; it is never logged and never part of an error.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use reqwest::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::events::{SseEvent, SseParser};
use crate::backends::config::SaltConfig;

/// How long a login, a publish or the opening of the event stream may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to salt-api. The messages are what an operator reads on every host of the job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("salt-api at {url} refused the connection (is salt-api running?)")]
    Refused { url: String },
    #[error("salt-api at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("cannot reach salt-api at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "salt-api rejected the credentials (401): check username, password and eauth in [backends.saltstack] \
         and the master's external_auth"
    )]
    Credentials,
    #[error("salt-api at {url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("salt-api at {url} sent an answer that is not what salt-api sends: {detail}")]
    Protocol { url: String, detail: String },
    #[error("salt-api's event stream ended: {0}")]
    StreamEnded(String),
}

/// A job salt-api accepted: its id and the minions the master sent it to (targets without an accepted key are
/// absent).
#[derive(Debug, Clone)]
pub struct Published {
    pub jid: String,
    pub minions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// The answer of `POST /login`: `{"return": [{"token", "start", "expire", "user", "eauth", "perms"}]}`.
#[derive(Deserialize)]
struct LoginAnswer {
    #[serde(rename = "return")]
    ret: Vec<LoginReturn>,
}

#[derive(Deserialize)]
struct LoginReturn {
    token: String,
    start: f64,
    expire: f64,
}

#[derive(Debug)]
pub struct SaltApi {
    http: reqwest::Client,
    /// The base URL without a trailing slash.
    url: String,
    config: SaltConfig,
    token: Mutex<Option<Token>>,
}

impl SaltApi {
    /// Builds the client; fails only on a configuration problem (bad URL, unreadable or invalid CA file).
    pub fn new(config: SaltConfig) -> Result<SaltApi, String> {
        let url = config.url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| format!("[backends.saltstack] url {:?} is not a URL: {e}", config.url))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("[backends.saltstack] url {:?} must start with http:// or https://", config.url));
        }
        let mut builder =
            reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).use_rustls_tls();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("[backends.saltstack] ca_file {}: cannot read it: {e}", ca.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("[backends.saltstack] ca_file {}: not a PEM certificate: {e}", ca.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().map_err(|e| format!("cannot set up the HTTP client for salt-api: {e}"))?;
        Ok(SaltApi { http, url, config, token: Mutex::new(None) })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn config(&self) -> &SaltConfig {
        &self.config
    }

    /// Logs in now (ignoring a cached token) and keeps the new token.
    pub async fn login(&self) -> Result<(), ApiError> {
        let mut slot = self.token.lock().await;
        *slot = Some(self.fresh_token().await?);
        Ok(())
    }

    /// Replaces the cached token by one salt-api does not know, as if the master had expired or revoked it: the
    /// next request meets a 401 and must log in again. For tests of that path.
    #[doc(hidden)]
    pub async fn spoil_token(&self) {
        if let Some(token) = self.token.lock().await.as_mut() {
            token.value = "0123456789abcdef0123456789abcdef01234567".to_owned();
        }
    }

    /// Publishes one low-state chunk (`{"client": "local_async", …}`) and returns the job salt-api created.
    /// A job that matched no minion at all comes back with no jid: then `minions` is empty.
    pub async fn publish(&self, low: Value) -> Result<Published, ApiError> {
        let body = json!([low]);
        let answer = self
            .authorized(|token| {
                self.http
                    .post(format!("{}/", self.url))
                    .header("X-Auth-Token", token)
                    .header(header::ACCEPT, "application/json")
                    .json(&body)
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        let value: Value = answer.json().await.map_err(|e| self.protocol(format!("publish answer: {e}")))?;
        let first = value.get("return").and_then(|r| r.get(0)).ok_or_else(|| self.protocol(value.to_string()))?;
        let Some(jid) = first.get("jid").and_then(Value::as_str) else {
            return Ok(Published { jid: String::new(), minions: Vec::new() });
        };
        let minions = first
            .get("minions")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Published { jid: jid.to_owned(), minions })
    }

    /// Opens `GET /events` and waits until salt-api listens to the bus: every event fired after this returns
    /// reaches the stream. Subscribe before publishing a job so that no return can be missed.
    pub async fn subscribe(&self) -> Result<EventStream, ApiError> {
        let answer = self
            .authorized(|token| {
                self.http
                    .get(format!("{}/events", self.url))
                    .header("X-Auth-Token", token)
                    .header(header::ACCEPT, "text/event-stream")
            })
            .await?;
        let mut stream = EventStream { body: answer, parser: SseParser::new(), queued: VecDeque::new() };
        match tokio::time::timeout(REQUEST_TIMEOUT, stream.fill_until_ready()).await {
            Ok(result) => result?,
            Err(_) => return Err(ApiError::Timeout { url: self.url.clone(), secs: REQUEST_TIMEOUT.as_secs() }),
        }
        Ok(stream)
    }

    /// Sends a request with the current token; on a 401 (token expired or revoked on the master) logs in again
    /// once and retries.
    async fn authorized(
        &self,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let token = self.token().await?;
        let answer = request(&token).send().await.map_err(|e| self.transport(e))?;
        if answer.status() != StatusCode::UNAUTHORIZED {
            return self.success(answer).await;
        }
        tracing::debug!(url = %self.url, "salt-api refused the token; logging in again");
        let token = self.renew(&token).await?;
        let answer = request(&token).send().await.map_err(|e| self.transport(e))?;
        if answer.status() == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Status {
                url: self.url.clone(),
                status: 401,
                body: format!(
                    "refused a fresh token of user {:?} (eauth {}): check its permissions in the master's \
                     external_auth",
                    self.config.username, self.config.eauth
                ),
            });
        }
        self.success(answer).await
    }

    /// The cached token, or a new one when there is none or it is about to expire.
    async fn token(&self) -> Result<String, ApiError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let token = self.fresh_token().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    /// Replaces `stale` by a new token, unless another call has done so already.
    async fn renew(&self, stale: &str) -> Result<String, ApiError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| t.value != stale) {
            return Ok(token.value.clone());
        }
        let token = self.fresh_token().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    async fn fresh_token(&self) -> Result<Token, ApiError> {
        let body = json!({
            "username": self.config.username,
            "password": self.config.password.expose(),
            "eauth": self.config.eauth,
        });
        let answer = self
            .http
            .post(format!("{}/login", self.url))
            .header(header::ACCEPT, "application/json")
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if answer.status() == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Credentials);
        }
        let answer = self.success(answer).await?;
        let login: LoginAnswer = answer.json().await.map_err(|e| self.protocol(format!("login answer: {e}")))?;
        let first = login.ret.into_iter().next().ok_or_else(|| self.protocol("login answer without a token"))?;
        // The lifetime, not the master's clock, so that a skewed clock here does not matter. Renew early enough
        // that a job started with this token can wait its whole timeout on the event stream (salt-api closes the
        // stream when the token expires).
        let lifetime = Duration::try_from_secs_f64((first.expire - first.start).max(0.0)).unwrap_or_default();
        let margin = Duration::from_secs(self.config.timeout_secs.saturating_add(60)).min(lifetime / 2);
        tracing::debug!(url = %self.url, user = %self.config.username, lifetime_s = lifetime.as_secs(),
            "logged in to salt-api");
        Ok(Token { value: first.token, renew_at: Instant::now() + lifetime - margin })
    }

    async fn success(&self, answer: reqwest::Response) -> Result<reqwest::Response, ApiError> {
        let status = answer.status();
        if status.is_success() {
            return Ok(answer);
        }
        let body = answer.text().await.unwrap_or_default();
        Err(ApiError::Status { url: self.url.clone(), status: status.as_u16(), body: summary(&body) })
    }

    fn transport(&self, err: reqwest::Error) -> ApiError {
        let url = self.url.clone();
        if err.is_timeout() {
            return ApiError::Timeout { url, secs: REQUEST_TIMEOUT.as_secs() };
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return ApiError::Refused { url };
                }
            }
            source = e.source();
        }
        ApiError::Unreachable { url, detail: chain(&err) }
    }

    fn protocol(&self, detail: impl Into<String>) -> ApiError {
        ApiError::Protocol { url: self.url.clone(), detail: summary(&detail.into()) }
    }
}

/// salt-api's event stream, from the moment it listens to the bus.
pub struct EventStream {
    body: reqwest::Response,
    parser: SseParser,
    queued: VecDeque<SseEvent>,
}

impl EventStream {
    /// The next event on the bus; an error when the stream ends (salt-api closes it when the token expires).
    pub async fn next(&mut self) -> Result<SseEvent, ApiError> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Ok(event);
            }
            self.read().await?;
        }
    }

    async fn fill_until_ready(&mut self) -> Result<(), ApiError> {
        while !self.parser.is_ready() {
            self.read().await?;
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<(), ApiError> {
        match self.body.chunk().await {
            Ok(Some(chunk)) => {
                self.queued.extend(self.parser.push(&chunk));
                Ok(())
            }
            Ok(None) => Err(ApiError::StreamEnded("salt-api closed it".to_owned())),
            Err(e) => Err(ApiError::StreamEnded(chain(&e))),
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

/// An error with its causes, one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The first line-ish of a body (salt-api's error pages are HTML), for an error message.
fn summary(body: &str) -> String {
    let text: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
