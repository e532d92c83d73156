//! One attempt to hand a notification to its channel: a signed webhook POST, a Slack-style POST, or a mail through
//! SMTP. Each answers whether the receiver took it, should be asked again later, or refused it for good.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::{
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
};
use sha2::Sha256;

use super::{
    message::{self, Message},
    notice::Notice,
    spec::{ChannelConfig, ChannelKind, SmtpTls},
};

/// The webhook body's format version: receivers check it before reading the rest.
pub const WEBHOOK_VERSION: u32 = 1;
/// How much of a receiver's answer is kept in the delivery log.
const ANSWER_BYTES: usize = 300;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// How an attempt ended.
#[derive(Debug)]
pub enum Answer {
    Taken(String),
    /// Worth another try: a network error, a timeout, 408, 429 or 5xx, a transient SMTP error.
    Retry(String),
    /// Asking again will not help: another 4xx, a permanent SMTP refusal, a channel that cannot be used.
    Refused(String),
}

/// What is sent: the delivery's identity and what it says.
pub struct Outgoing<'a> {
    pub uid: &'a str,
    pub created_at: i64,
    pub attempt: i64,
    pub count: i64,
    pub notice: &'a Notice,
    pub message: &'a Message,
}

/// The HTTP client for webhooks and Slack: no redirects (a signed body must not be sent where the admin did not
/// say), bounded time.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(SEND_TIMEOUT)
        .user_agent(concat!("OMServer-notify/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub async fn send(
    client: &reqwest::Client,
    kind: ChannelKind,
    config: &ChannelConfig,
    secret: Option<&str>,
    out: &Outgoing<'_>,
) -> Answer {
    match kind {
        ChannelKind::Webhook => webhook(client, config, secret, out).await,
        ChannelKind::Slack => {
            let Some(url) = &config.url else { return Answer::Refused("the channel has no url".into()) };
            post(client.post(url).json(&message::slack(out.message))).await
        }
        ChannelKind::Email => email(config, secret, out).await,
    }
}

/// The signature of a webhook body: `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under the channel's
/// secret, as GitHub and Stripe sign theirs (the timestamp lets receivers refuse replays).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this cannot happen.
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + digest.len() * 2);
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

async fn webhook(client: &reqwest::Client, config: &ChannelConfig, secret: Option<&str>, out: &Outgoing<'_>) -> Answer {
    let Some(url) = &config.url else { return Answer::Refused("the channel has no url".into()) };
    let Some(secret) = secret else { return Answer::Refused("the channel has no signing secret".into()) };
    let body = serde_json::json!({
        "version": WEBHOOK_VERSION,
        "id": out.uid,
        "event": out.notice.event(),
        "created_at": out.created_at,
        "attempt": out.attempt,
        "count": out.count,
        "title": out.message.title,
        "text": message::plain(out.message),
        "link": out.message.link,
        "data": out.notice,
    });
    let body = match serde_json::to_vec(&body) {
        Ok(body) => body,
        Err(e) => return Answer::Refused(format!("cannot encode the body: {e}")),
    };
    let timestamp = (crate::store::now_ms() / 1000).to_string();
    let request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-OMServer-Event", out.notice.event())
        .header("X-OMServer-Delivery", out.uid)
        .header("X-OMServer-Timestamp", &timestamp)
        .header("X-OMServer-Signature", signature(secret, &timestamp, &body))
        .body(body);
    post(request).await
}

async fn post(request: reqwest::RequestBuilder) -> Answer {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Answer::Retry(error_chain(&e)),
    };
    let status = response.status();
    let text = bounded_body(response).await;
    let answer = if text.is_empty() { status.to_string() } else { format!("{status}: {text}") };
    if status.is_success() {
        Answer::Taken(answer)
    } else if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        Answer::Retry(answer)
    } else if status.is_redirection() {
        Answer::Refused(format!("{answer} (redirects are not followed: give the final URL)"))
    } else {
        Answer::Refused(answer)
    }
}

/// The start of a response body, as one line: enough for the log, never a whole page.
async fn bounded_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(ANSWER_BYTES);
    message::one_line(&String::from_utf8_lossy(&bytes))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn email(config: &ChannelConfig, password: Option<&str>, out: &Outgoing<'_>) -> Answer {
    let (Some(from), Some(smtp)) = (&config.from, &config.smtp) else {
        return Answer::Refused("the channel has no sender or SMTP server".into());
    };
    let mail = match build_mail(from, &config.to, out) {
        Ok(mail) => mail,
        Err(reason) => return Answer::Refused(reason),
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(SEND_TIMEOUT));
    let tls = match smtp.tls {
        SmtpTls::None => Ok(Tls::None),
        SmtpTls::Starttls => TlsParameters::new(smtp.host.clone()).map(Tls::Required),
        SmtpTls::Tls => TlsParameters::new(smtp.host.clone()).map(Tls::Wrapper),
    };
    match tls {
        Ok(tls) => transport = transport.tls(tls),
        Err(e) => return Answer::Refused(format!("TLS settings: {}", error_chain(&e))),
    }
    if let (Some(user), Some(password)) = (&smtp.user, password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.to_owned()));
    }
    match transport.build().send(mail).await {
        Ok(response) => Answer::Taken(message::one_line(&format!(
            "{} {}",
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        ))),
        Err(e) if e.is_permanent() => Answer::Refused(error_chain(&e)),
        Err(e) => Answer::Retry(error_chain(&e)),
    }
}

/// The mail, built through lettre's typed builders only: a CR LF in a subject cannot start a header.
fn build_mail(from: &str, to: &[String], out: &Outgoing<'_>) -> Result<lettre::Message, String> {
    let mailbox = |text: &str| text.parse::<Mailbox>().map_err(|e| format!("address {text:?}: {e}"));
    let mut builder = lettre::Message::builder()
        .from(mailbox(from)?)
        .subject(message::subject(out.message))
        .message_id(Some(format!("<{}@omserver>", out.uid)));
    for address in to {
        builder = builder.to(mailbox(address)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(message::plain(out.message), message::html(out.message)))
        .map_err(|e| format!("building the mail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", "1700000000", br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
