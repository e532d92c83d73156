//! `omserver audit …`: the chain's check, and retention's archive by hand (move out now, check, search,
//! restore).

use std::{collections::HashMap, io::Write, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::secret_key;
use crate::{
    audit::{
        archive,
        chain::{self, ChainKey, Report},
        retention::Retention,
        Filter, CHAIN_KEY_PURPOSE,
    },
    auth,
    calendar::{self, End},
    config::Config,
    store::{now_ms, Store},
};

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Walk every host's hash chain and report rows deleted, inserted or edited in the database (from where each
    /// host's archive ends). With --archive, check the archive files instead, and that each host's archive ends
    /// where the database's rows begin. Exit code 0 only when the trail is intact.
    Verify {
        /// An archive directory to check (usually `[audit] archive_dir`).
        #[arg(long)]
        archive: Option<PathBuf>,
    },
    /// Move the rows received before a time into the archive now (the server does it every hour when
    /// `[audit] retain_days` is set).
    Archive {
        /// A UTC time or day (`2026-09-04`, `2026-09-04 12:00`), not in the future; default: the start of the day
        /// `retain_days` days ago.
        #[arg(long)]
        before: Option<String>,
    },
    /// Search archived rows, oldest first per host: one line per row (time received, host, user, command), or the
    /// archive's own JSON lines with --json.
    Search {
        #[arg(long)]
        archive: Option<PathBuf>,
        /// A host name; repeat for more.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// A user (or login user); repeat for more.
        #[arg(long = "user")]
        users: Vec<String>,
        /// A substring of the command, case ignored.
        #[arg(long)]
        q: Option<String>,
        /// legacy, agent or execve; repeat for more.
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Received at or after this UTC time or day.
        #[arg(long)]
        from: Option<String>,
        /// Received at or before this UTC time or day.
        #[arg(long)]
        to: Option<String>,
        /// Stop after this many rows.
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Put a host's archived rows back into the database, newest first, down to a day. They are moved out again
    /// by the next pass if they are older than `retain_days`: raise it first.
    Restore {
        /// The host, by inventory name.
        #[arg(long)]
        host: String,
        /// The oldest UTC day to restore; default: all that is archived.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        archive: Option<PathBuf>,
    },
}

pub(super) async fn audit(config: Config, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let secret = secret_key(&config)?;
    let key = auth::derive_key(&secret, CHAIN_KEY_PURPOSE);
    let archive_dir = |given: Option<PathBuf>| given.unwrap_or_else(|| config.audit_archive_dir());
    match cmd {
        AuditCommand::Verify { archive: None } => {
            let store = Store::connect(&config.database_url).await?;
            let audit = print_report(&chain::verify(&store, &key).await?, "rows on");
            let activity_key = auth::derive_key(&secret, crate::activity::ACTIVITY_KEY_PURPOSE);
            let activity = crate::activity::verify(&store, &activity_key).await?;
            for p in &activity.problems {
                println!("activity log at row {}: {}", p.id, p.problem);
            }
            println!("{} activity log rows checked, {} problems", activity.rows, activity.problems.len());
            Ok(if activity.problems.is_empty() { audit } else { ExitCode::FAILURE })
        }
        AuditCommand::Verify { archive: Some(dir) } => {
            if !dir.is_dir() {
                bail!("{}: not a directory", dir.display());
            }
            let store = Store::connect(&config.database_url).await?;
            let lines = store.archived_up_to().await?;
            let report = archive::verify(&dir, &ChainKey::new(&key), Some(&lines))?;
            Ok(print_report(&report, "archived rows on"))
        }
        AuditCommand::Archive { before } => {
            let now = now_ms();
            let cutoff = match before {
                Some(text) => calendar::utc_ms(&text, End::Start)
                    .with_context(|| format!("--before {text:?}: not a day or time (2026-09-04, 2026-09-04 12:00)"))?,
                None if config.audit.retain_days > 0 => Retention::cutoff(config.audit.retain_days, now),
                None => bail!("[audit] retain_days is 0 (keep everything): say --before"),
            };
            if cutoff > now {
                bail!("--before is in the future: rows still to come would belong in the archive");
            }
            let store = Store::connect(&config.database_url).await?;
            let retention = Retention::new(store, &key, archive_dir(None));
            let moved = retention.archive_before(cutoff).await?;
            println!(
                "{} rows of {} hosts received before {} moved into {} files in {}",
                moved.rows,
                moved.hosts,
                calendar::utc_text(cutoff),
                moved.files,
                retention.dir().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Search { archive, hosts, users, q, sources, from, to, limit, json } => {
            let time = |text: Option<String>, end: End, flag: &str| {
                text.map(|t| calendar::utc_ms(&t, end).with_context(|| format!("{flag} {t:?}: not a day or time")))
                    .transpose()
            };
            let search = archive::Search {
                filter: Filter { users, text: q, sources, ..Filter::default() },
                host_names: hosts,
                received_from: time(from, End::Start, "--from")?,
                received_to: time(to, End::Finish, "--to")?,
            };
            let dir = archive_dir(archive);
            let mut out = std::io::stdout().lock();
            let mut failed = None;
            let limit = limit.unwrap_or(u64::MAX);
            let mut printed = 0;
            archive::search(&dir, &search, |host, row| {
                let written = if json {
                    serde_json::to_string(&row).map_err(std::io::Error::other).and_then(|line| writeln!(out, "{line}"))
                } else {
                    writeln!(
                        out,
                        "{}\t{host}\t{}\t{}",
                        calendar::utc_text(row.received_at),
                        row.history_user.escape_debug(),
                        row.history_command.escape_debug()
                    )
                };
                printed += 1;
                // A closed pipe (`| head`) ends the search quietly.
                failed = written.err();
                failed.is_none() && printed < limit
            })?;
            match failed {
                Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        AuditCommand::Restore { host, since, archive } => {
            if let Some(day) = &since {
                if calendar::utc_ms(day, End::Start).is_none() || day.len() != 10 {
                    bail!("--since {day:?}: not a day (2026-09-04)");
                }
            }
            let store = Store::connect(&config.database_url).await?;
            let hosts: HashMap<String, i64> = store.list_hosts().await?.into_iter().map(|h| (h.name, h.id)).collect();
            let Some(&host_id) = hosts.get(&host) else { bail!("{host}: no such host in the inventory") };
            let retention = Retention::new(store, &key, archive_dir(archive));
            let moved = retention.restore(host_id, since.as_deref()).await?;
            println!("{} rows of {host} restored from {} files", moved.rows, moved.files);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_report(report: &Report, what: &str) -> ExitCode {
    let name = |id: i64| report.chains.iter().find(|c| c.host_id == id).map_or("", |c| c.host.as_str());
    for f in &report.findings {
        println!("host {} (#{}) at chain position {}: {}", name(f.host_id), f.host_id, f.chain_seq, f.problem);
    }
    println!("{} {what} {} hosts checked, {} problems", report.rows, report.hosts, report.findings.len());
    if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
