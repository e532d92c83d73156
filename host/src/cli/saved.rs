//! `omserver template …` and `omserver schedule …`: saved jobs and their schedules from the command line, on the
//! same database as the server. A schedule changed here reaches a running server's scheduler within 30 s (it
//! plans again that often); through the API it is at once.

use std::{io::Read, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;

use super::{
    actor_name,
    running::{run, Launch},
    Recorder,
};
use crate::{
    access::Scope,
    activity::Change,
    app::App,
    calendar::utc_text,
    config::Config,
    schedules::{Overlap, ScheduleSpec, Schedules},
    store::Store,
    templates::TemplateSpec,
};

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List saved jobs: id, name, module, targets.
    List,
    /// Print one saved job as JSON (the form `create` and `edit` read).
    Show { id: i64 },
    /// Save a job from a JSON file (`-` for standard input) and print its id. The file holds `name`,
    /// `description`, `module`, `params`, `targets` (`hosts`, `functions`, `apps`, `tags`), `backend`, `rollout`
    /// and `timeout_secs`, as `POST /api/templates` takes them.
    Create { file: PathBuf },
    /// Replace a saved job's definition with a JSON file's (`-` for standard input).
    Edit { id: i64, file: PathBuf },
    /// Delete a saved job (its jobs stay in the history).
    Delete { id: i64 },
    /// Run a saved job now, in this process, printing each host as it finishes. Exit code 0 only if every host
    /// is ok.
    Run { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules: id, name, saved job, timing, state, next fire.
    List,
    /// Schedule a saved job; prints the id and the next five fire times.
    Create {
        #[arg(long)]
        name: String,
        /// The saved job's id.
        #[arg(long)]
        template: i64,
        /// Five fields, or six with a leading seconds field, or @hourly, @daily…
        #[arg(long)]
        cron: String,
        /// An IANA time zone.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Create it paused.
        #[arg(long)]
        disabled: bool,
        /// What a fire does while the previous run still goes: skip, or queue behind it.
        #[arg(long, default_value = "skip", value_parser = ["skip", "queue"])]
        overlap: String,
        /// At start, run the newest slot missed while the server was down if it is at most this old.
        #[arg(long, default_value_t = 0)]
        catch_up_secs: u64,
    },
    /// Start firing again (slots before now are not counted as missed).
    Enable { id: i64 },
    /// Stop firing until enabled again.
    Disable { id: i64 },
    /// Delete a schedule and its record of fires.
    Delete { id: i64 },
    /// A schedule's fires, newest first: slot, outcome, job or reason.
    Fires {
        id: i64,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

fn read_spec(file: &PathBuf) -> anyhow::Result<TemplateSpec> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not a saved job", file.display()))
}

pub async fn template(config: Config, cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    let app = App::open(config).await?;
    let templates = app.templates.clone();
    let (log, actor) = (Recorder::of(app.activity.clone()), actor_name());
    match cmd {
        TemplateCommand::List => {
            for t in templates.list(&Scope::All).await? {
                let s = &t.spec.targets;
                let targets: Vec<String> =
                    [("", &s.hosts), ("function:", &s.functions), ("app:", &s.apps), ("tag:", &s.tags)]
                        .iter()
                        .flat_map(|(kind, list)| list.iter().map(move |v| format!("{kind}{v}")))
                        .collect();
                println!("{:>5}  {:<32} Mid_{:<6} {}", t.id, t.spec.name, t.spec.module, targets.join(","));
            }
        }
        TemplateCommand::Show { id } => println!("{}", serde_json::to_string_pretty(&templates.get(id).await?.spec)?),
        TemplateCommand::Create { file } => {
            let spec = read_spec(&file)?;
            let change = Change::ok("template.create", String::new()).fields(&spec);
            let id = templates.create(spec, &actor, &Scope::All).await?;
            log.record(Change { object: format!("saved job {id}"), ..change }).await;
            println!("{id}")
        }
        TemplateCommand::Edit { id, file } => {
            let before = templates.get(id).await?;
            let after = templates.update(id, read_spec(&file)?, &actor, &Scope::All).await?;
            log.record(
                Change::ok("template.update", format!("saved job {id}")).changed_fields(&before.spec, &after.spec),
            )
            .await;
            println!("saved job {id} changed");
        }
        TemplateCommand::Delete { id } => {
            let before = templates.get(id).await?;
            templates.delete(id, &actor, &Scope::All).await?;
            log.record(Change::ok("template.delete", format!("saved job {id}")).fields(&before.spec)).await;
            println!("saved job {id} deleted");
        }
        TemplateCommand::Run { id } => return run(app, Launch::Template(id)).await,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn schedule(config: Config, cmd: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database_url).await?;
    let (log, actor) = (Recorder::open(&config, &store)?, actor_name());
    let schedules = Schedules::new(store);
    match cmd {
        ScheduleCommand::List => {
            for s in schedules.list().await? {
                let state = if s.spec.enabled { "enabled" } else { "disabled" };
                let next = s.next.first().map(|n| utc_text(*n)).unwrap_or_else(|| "-".to_owned());
                println!(
                    "{:>5}  {:<24} saved job {:<5} {:<20} {:<16} {state:<8} next {next}",
                    s.id, s.spec.name, s.spec.template, s.spec.cron, s.spec.timezone
                );
            }
        }
        ScheduleCommand::Create { name, template, cron, timezone, disabled, overlap, catch_up_secs } => {
            let overlap = if overlap == "queue" { Overlap::Queue } else { Overlap::Skip };
            let spec = ScheduleSpec { name, template, cron, timezone, enabled: !disabled, overlap, catch_up_secs };
            let view = schedules.create(spec, &actor).await?;
            log.record(Change::ok("schedule.create", format!("schedule {}", view.id)).fields(&view.spec)).await;
            println!("{}", view.id);
            for next in view.next {
                eprintln!("next: {}", utc_text(next));
            }
        }
        ScheduleCommand::Enable { id } | ScheduleCommand::Disable { id } => {
            let enable = matches!(cmd, ScheduleCommand::Enable { .. });
            let before = schedules.get(id).await?.spec;
            let spec = ScheduleSpec { enabled: enable, ..before.clone() };
            let after = schedules.update(id, spec, &actor).await?;
            log.record(Change::ok("schedule.update", format!("schedule {id}")).changed_fields(&before, &after.spec))
                .await;
            println!("schedule {id} {}", if enable { "enabled" } else { "disabled" });
        }
        ScheduleCommand::Delete { id } => {
            let before = schedules.get(id).await?.spec;
            schedules.delete(id, &actor).await?;
            log.record(Change::ok("schedule.delete", format!("schedule {id}")).fields(&before)).await;
            println!("schedule {id} deleted");
        }
        ScheduleCommand::Fires { id, limit } => {
            for f in schedules.fires(id, limit.clamp(1, 1_000)).await? {
                let what = match (f.job_id, &f.reason) {
                    (Some(job), Some(note)) => format!("job {job} ({note})"),
                    (Some(job), None) => format!("job {job}"),
                    (None, Some(reason)) => reason.clone(),
                    (None, None) => String::new(),
                };
                println!("{}  {:<8} {what}", utc_text(f.slot), f.outcome);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
