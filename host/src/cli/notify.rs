//! `omserver notify …`: notification channels, subscriptions and the delivery log from the command line, on the
//! same database as the server. Deliveries are sent by the running server (it looks for due ones twice a second),
//! so `test` and `resend` need one.

use std::{io::Read, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Subcommand;

use super::{actor_name, Recorder};
use crate::{
    activity::Change,
    calendar::utc_text,
    config::Config,
    notify::{ChannelSpec, DeliveryView, Filter, Notifications, SubscriptionSpec},
    store::{DeliveryQuery, Store},
};

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// List channels: id, name, kind, where they send.
    Channels,
    /// Create a channel from a JSON file (`-` for standard input), as `POST /api/notify/channels` takes it; prints
    /// its id and, for a webhook, its signing secret (shown this once).
    AddChannel { file: PathBuf },
    /// Delete a channel with its subscriptions and deliveries.
    DeleteChannel { id: i64 },
    /// Send a test message through a channel (by the running server) and print the outcome.
    Test { id: i64 },
    /// List subscriptions: id, channel, event, filter.
    Subscriptions,
    /// Subscribe a channel to an event.
    Subscribe {
        #[arg(long)]
        channel: i64,
        /// job.finished, schedule.fire, audit.alert, module.rejected, backend.unhealthy or audit.verify.
        #[arg(long)]
        event: String,
        /// A JSON object, e.g. '{"status": ["failed"]}' or '{"rule": "rm-root", "window_secs": 600}'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Delete a subscription.
    Unsubscribe { id: i64 },
    /// The delivery log, newest first.
    Deliveries {
        /// pending, sent or failed.
        #[arg(long, value_parser = ["pending", "sent", "failed"])]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One delivery with every attempt.
    Delivery { id: i64 },
    /// Send a failed delivery again (by the running server).
    Resend { id: i64 },
}

fn print_delivery(d: &DeliveryView) {
    let error = d.last_error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default();
    println!(
        "{:>6}  {}  {:<8} {:<18} {:<16} attempts {}  {}{error}",
        d.id,
        utc_text(d.created_at),
        d.status,
        d.event,
        d.channel_name,
        d.attempts,
        d.title
    );
}

pub async fn notify(config: Config, cmd: NotifyCommand) -> anyhow::Result<ExitCode> {
    let public_url = config.public_url();
    let store = Store::connect(&config.database_url).await?;
    let log = Recorder::open(&config, &store)?;
    let notify = Notifications::new(store, config.notify.clone(), public_url);
    let actor = actor_name();
    match cmd {
        NotifyCommand::Channels => {
            for c in notify.channels().await? {
                let target = match (&c.url, c.to.is_empty()) {
                    (Some(url), _) => url.clone(),
                    (None, false) => c.to.join(","),
                    (None, true) => String::new(),
                };
                println!("{:>5}  {:<24} {:<8} {target}", c.id, c.name, c.kind.as_str());
            }
        }
        NotifyCommand::AddChannel { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let spec: ChannelSpec =
                serde_json::from_str(&text).with_context(|| format!("{} is not a channel", file.display()))?;
            let made = notify.add_channel(spec, &actor).await?;
            let view = notify.channels().await?.into_iter().find(|c| c.id == made.id);
            log.record(Change::ok("channel.add", format!("channel {}", made.id)).fields(&view)).await;
            println!("{}", made.id);
            if let Some(secret) = made.secret {
                eprintln!("signing secret (shown this once): {secret}");
            }
        }
        NotifyCommand::DeleteChannel { id } => {
            let before = notify.channels().await?.into_iter().find(|c| c.id == id);
            notify.delete_channel(id, &actor).await?;
            log.record(Change::ok("channel.delete", format!("channel {id}")).fields(&before)).await;
            println!("channel {id} deleted");
        }
        NotifyCommand::Test { id } => {
            let d = notify.test_channel(id, &actor, Duration::from_secs(20)).await?;
            log.record(Change::ok("channel.test", format!("channel {id}")).with("delivery", d.id)).await;
            print_delivery(&d);
            if d.status != "sent" {
                return Ok(ExitCode::FAILURE);
            }
        }
        NotifyCommand::Subscriptions => {
            for s in notify.subscriptions().await? {
                let filter = serde_json::to_string(&s.filter)?;
                println!("{:>5}  {:<24} {:<18} {filter}", s.id, s.channel_name, s.event);
            }
        }
        NotifyCommand::Subscribe { channel, event, filter } => {
            let filter: Filter = match filter {
                Some(text) => serde_json::from_str(&text).context("--filter is not a filter")?,
                None => Filter::default(),
            };
            let id = notify.add_subscription(SubscriptionSpec { channel, event, filter }, &actor).await?;
            let view = notify.subscriptions().await?.into_iter().find(|s| s.id == id);
            log.record(Change::ok("subscription.add", format!("subscription {id}")).fields(&view)).await;
            println!("{id}");
        }
        NotifyCommand::Unsubscribe { id } => {
            let before = notify.subscriptions().await?.into_iter().find(|s| s.id == id);
            notify.delete_subscription(id, &actor).await?;
            log.record(Change::ok("subscription.delete", format!("subscription {id}")).fields(&before)).await;
            println!("subscription {id} deleted");
        }
        NotifyCommand::Deliveries { status, limit } => {
            let query = DeliveryQuery { status, limit: limit.clamp(1, 1_000), ..DeliveryQuery::default() };
            for d in notify.deliveries(&query).await? {
                print_delivery(&d);
            }
        }
        NotifyCommand::Delivery { id } => {
            let d = notify.delivery(id).await?;
            print_delivery(&d);
            for a in d.log.unwrap_or_default() {
                println!(
                    "  #{} {}  {}  {}",
                    a.attempt,
                    utc_text(a.at),
                    if a.ok != 0 { "taken" } else { "not taken" },
                    a.answer
                );
            }
        }
        NotifyCommand::Resend { id } => {
            let d = notify.resend(id, &actor).await?;
            log.record(Change::ok("delivery.resend", format!("delivery {id}"))).await;
            print_delivery(&d);
        }
    }
    Ok(ExitCode::SUCCESS)
}
