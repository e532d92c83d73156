//! The command line: the prompt form and the `flush`, `status`, `profile` and `watch` subcommands.

use std::panic;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::deliver::{self, FlushOptions, HttpTransport};
use crate::error::{Error, Result};
use crate::event::Capture;
use crate::history;
use crate::identity::{real_uid, Identity};
use crate::kernel::watch;
use crate::local_log::{utc_timestamp, LocalLog};
use crate::profile;
use crate::spool::Spool;

const USAGE: &str = "\
usage:
  omaudit-agent \"$(history 1)\"      record one history line (run from PROMPT_COMMAND)
  omaudit-agent <number> <user> <date> <time> <command…>
  omaudit-agent flush [--quiet]      deliver spooled events now (exit 0 when nothing is left)
  omaudit-agent status               spooled and lost counts, last error
  omaudit-agent profile [--path P]   print the /etc/profile.d snippet
  omaudit-agent watch                capture every exec from the kernel's audit records (root; runs until SIGTERM)
  omaudit-agent watch --check        say whether kernel capture can run here, or only the history path, and why
configuration: /etc/omaudit/agent.toml or $OMAUDIT_CONFIG, overlaid by OMAUDIT_* variables";

/// Runs the agent with `args` (program name first) and returns the exit status.
pub fn run(args: Vec<String>) -> ExitCode {
    let rest = args.get(1..).unwrap_or_default();
    match rest.first().map(String::as_str) {
        Some("flush") => flush_command(&rest[1..]),
        Some("status") => status_command(&rest[1..]),
        Some("profile") => profile_command(&rest[1..]),
        Some("watch") => watch_command(&rest[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--version" | "version") => {
            println!("omaudit-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => prompt(rest),
    }
}

/// The prompt path. Whatever happens the shell gets exit status 0 and at most one short stderr line.
fn prompt(args: &[String]) -> ExitCode {
    panic::set_hook(Box::new(|_| {}));
    match panic::catch_unwind(|| prompt_inner(args)) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("omaudit-agent: {err}"),
        Err(_) => eprintln!("omaudit-agent: internal error (command not recorded)"),
    }
    ExitCode::SUCCESS
}

fn prompt_inner(args: &[String]) -> Result<()> {
    // A broken file must not cost the command: spool it with the defaults and the environment, then say so.
    let (config, config_error) = match Config::load() {
        Ok(config) => (config, None),
        Err(err) => (Config::fallback_with(|name| std::env::var(name).ok()), Some(err)),
    };
    let uid = real_uid();
    let log = LocalLog::new(config.log_path(uid));
    let line = match history::parse_args(args) {
        Ok(line) => line,
        Err(err) => {
            let raw: String = args.join(" ").chars().take(200).collect();
            // An empty history (a new account's first prompt) is normal, not a misconfiguration.
            if !raw.trim().is_empty() {
                log.write(&format!("{err} (argv: {raw:?})"));
            }
            return config_error.map_or(Ok(()), Err);
        }
    };
    let spool = Spool::open(&config.spool_dir, uid, config.spool_max_events)?;
    let capture = Capture { line, identity: Identity::current(), ip: config.ip.clone().unwrap_or_default() };
    let recorded = spool.record(capture)?;
    if let Some(err) = config_error {
        return Err(err);
    }
    if recorded.pending && config.endpoint().is_ok() && !spool.flusher_running()? {
        let started = std::env::current_exe().and_then(|exe| deliver::spawn_background(&exe));
        if let Err(err) = started {
            // The events stay spooled for the next prompt; no need to bother the user at every prompt.
            log.write(&format!("cannot start the background flusher: {err}"));
        }
    }
    Ok(())
}

fn flush_command(args: &[String]) -> ExitCode {
    let quiet = match args {
        [] => false,
        [flag] if flag == "--quiet" => true,
        _ => return usage_error("flush takes only --quiet"),
    };
    let say = |text: &str| {
        if !quiet {
            println!("omaudit-agent: {text}");
        }
    };
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => return failure(quiet, &err),
    };
    let uid = real_uid();
    let log = LocalLog::new(config.log_path(uid));
    let spool = match Spool::open(&config.spool_dir, uid, config.spool_max_events) {
        Ok(spool) => spool,
        Err(err) => return failure(quiet, &err),
    };
    let transport = match HttpTransport::new(&config) {
        Ok(transport) => transport,
        Err(err) => {
            let _ = spool.note_error(Some(&err.to_string()));
            let left = spool.status().map(|s| s.spooled).unwrap_or(0);
            say(&format!("{err}; {left} event(s) stay spooled"));
            return if left == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    };
    let ip = match &config.ip {
        Some(ip) => ip.clone(),
        None => config.server.as_deref().and_then(deliver::detect_ip).map(|ip| ip.to_string()).unwrap_or_default(),
    };
    let options = FlushOptions { wait_for_lock: !quiet, batch_max: config.batch_max };
    let report = match deliver::flush(&spool, &transport, &ip, options, &log) {
        Ok(report) => report,
        Err(err) => return failure(quiet, &err),
    };
    if report.skipped {
        return ExitCode::SUCCESS;
    }
    say(&format!(
        "sent {} event(s) in {} request(s): stored {}, duplicates {}, rejected {}; gaps reported {}; \
         too large {}; damaged lines dropped {}",
        report.stored + report.duplicates + report.rejected as u64,
        report.batches,
        report.stored,
        report.duplicates,
        report.rejected,
        report.gaps_reported,
        report.too_large,
        report.damaged,
    ));
    if let Some(err) = &report.error {
        say(&format!("delivery stopped: {err}"));
    }
    say(&format!("{} event(s) and {} gap(s) still spooled", report.remaining, report.pending_gaps));
    if report.remaining == 0 && report.pending_gaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn status_command(args: &[String]) -> ExitCode {
    if !args.is_empty() {
        return usage_error("status takes no arguments");
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => return failure(false, &err),
    };
    let uid = real_uid();
    let result = Spool::open(&config.spool_dir, uid, config.spool_max_events)
        .and_then(|spool| Ok((spool.status()?, spool.flusher_running()?)));
    let (status, flusher) = match result {
        Ok(found) => found,
        Err(err) => return failure(false, &err),
    };
    let state = &status.state;
    let server = match config.endpoint() {
        Ok((server, _)) => server.to_owned(),
        Err(err) => err.to_string(),
    };
    let when = |t: Option<u64>| t.map(utc_timestamp).unwrap_or_else(|| "never".into());
    println!("spool:         {}", status.path.display());
    println!("server:        {server}");
    println!("stream:        {} (next seq {})", state.stream, state.next_seq);
    println!("spooled:       {}", status.spooled);
    println!("lost:          {} ({} gap(s) not yet reported)", state.lost, state.gaps.len());
    match &state.last_error {
        Some(err) => println!("last error:    {err} (at {})", when(state.last_error_at)),
        None => println!("last error:    none"),
    }
    println!("last delivery: {}", when(state.last_delivery_at));
    println!("flusher:       {}", if flusher { "running" } else { "idle" });
    println!("log:           {}", config.log_path(uid).display());
    ExitCode::SUCCESS
}

fn profile_command(args: &[String]) -> ExitCode {
    let path = match args {
        [] => match std::env::current_exe() {
            Ok(path) => path,
            Err(err) => return failure(false, &Error::Usage(format!("cannot find my own path ({err}); use --path"))),
        },
        [flag, path] if flag == "--path" => PathBuf::from(path),
        _ => return usage_error("profile takes only --path <absolute path of the agent>"),
    };
    match profile::snippet(&path) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => failure(false, &err),
    }
}

fn watch_command(args: &[String]) -> ExitCode {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return usage_error("watch takes only --check"),
    };
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => return failure(false, &err),
    };
    if check {
        let found = watch::check(&config);
        for line in &found.lines {
            println!("{line}");
        }
        return if found.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMAUDIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
    let stop = watch::stop_on_signals();
    match watch::run(&config, stop) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "watch stopped");
            ExitCode::from(2)
        }
    }
}

fn failure(quiet: bool, err: &Error) -> ExitCode {
    if !quiet {
        eprintln!("omaudit-agent: {err}");
    }
    ExitCode::from(2)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("omaudit-agent: {message}\n{USAGE}");
    ExitCode::from(2)
}
