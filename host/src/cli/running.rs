//! `omserver run`, `omserver rerun` and `omserver template run`: a job run in this process, each host printed as
//! it finishes.

use std::process::ExitCode;

use super::{actor_name, Recorder};
use crate::{
    access::Scope,
    activity::Change,
    app::App,
    jobs::{Amount, JobEvent, JobRequest, RerunHosts},
    store::ResultRow,
};

/// The exit code of a job an approval policy holds (1 is a job that ran and did not succeed).
pub(super) const WAITS_FOR_APPROVAL: u8 = 3;

/// What `omserver run`, `omserver rerun` or `omserver template run` starts.
pub(super) enum Launch {
    New(JobRequest),
    Rerun(i64, RerunHosts),
    Template(i64),
}

/// Runs a job in this process, printing each host as it finishes (cancelled and skipped ones too).
pub(super) async fn run(app: App, launch: Launch) -> anyhow::Result<ExitCode> {
    let (log, actor) = (Recorder::of(app.activity.clone()), actor_name());
    let id = match launch {
        Launch::New(request) => {
            let change = Change::ok("job.submit", String::new()).fields(&request);
            let id = app.jobs.submit(request, &actor, &Scope::All).await?;
            log.record(Change { object: format!("job {id}"), ..change }).await;
            id
        }
        Launch::Rerun(origin, which) => {
            let id = app.jobs.rerun(origin, which, &actor, &Scope::All).await?;
            log.record(Change::ok("job.rerun", format!("job {id}")).with("rerun_of", origin).with("hosts", which))
                .await;
            eprintln!("job {id} re-runs job {origin}");
            id
        }
        Launch::Template(template) => {
            let id = app.templates.run(template, &actor, &Scope::All).await?;
            log.record(Change::ok("template.run", format!("saved job {template}")).with("job", id)).await;
            id
        }
    };
    // Each host as it finishes; the final view says how the job ended.
    let mut events = app.jobs.events(id, &Scope::All).await?;
    let mut end = None;
    while let Some(event) = events.next().await {
        match event {
            JobEvent::Host(r) => print_result(&r),
            JobEvent::End(view) => end = Some(view),
        }
    }
    let job = match end {
        Some(view) => *view,
        None => app.jobs.view(id).await?,
    };
    if let Some(approval) = job.approval.as_ref().filter(|_| job.status == "pending_approval") {
        // The server runs it once another person approves it; this process has nothing more to wait for.
        eprintln!(
            "job {id} waits for approval (policy {:?}): approve it on its page in the console or with \
             POST /api/jobs/{id}/approve; the server runs it then",
            approval.policy
        );
        return Ok(ExitCode::from(WAITS_FOR_APPROVAL));
    }
    if let Some(error) = &job.error {
        eprintln!("job {id} {}: {error}", job.status);
    }
    Ok(if job.status == "succeeded" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `3` or `25%`, as `--batch` and `--max-failed` take them; the range is checked with the rest of the job.
pub(super) fn parse_amount(text: &str) -> Result<Amount, String> {
    match text.trim().parse::<i64>() {
        Ok(n) => Ok(Amount::Count(n)),
        Err(_) if text.trim().ends_with('%') => Ok(Amount::Share(text.trim().to_owned())),
        Err(_) => Err(format!("{text:?} is neither a number of hosts nor a percentage such as 25%")),
    }
}

fn print_result(r: &ResultRow) {
    println!("host: {}\nstatus: {}{}", r.host, r.status, r.rc.map(|rc| format!(" (rc {rc})")).unwrap_or_default());
    if !r.stdout.is_empty() {
        println!("{}", r.stdout.trim_end());
    }
    if !r.stderr.is_empty() {
        eprintln!("{}: {}", r.host, r.stderr.trim_end());
    }
}
