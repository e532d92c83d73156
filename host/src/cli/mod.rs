//! The `omserver` command line. This is the binary's edge, so errors are `anyhow` here and nowhere else.

mod audit;
mod notify;
mod record;
mod running;
mod saved;

use std::{path::PathBuf, process::ExitCode};

use record::{actor_name, Recorder};
use running::{parse_amount, run, Launch};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{
    activity::Change,
    app::App,
    auth::{self, Role, Tokens},
    backends::{ssh, Backends, Limits},
    config::Config,
    jobs::{Amount, JobRequest, RerunHosts, Rollout},
    store::{NewHost, Store, UserName},
    users::Users,
};

#[derive(Debug, Parser)]
#[command(name = "omserver", version, about = "Run task modules on many hosts; audit every command.")]
pub struct Cli {
    /// TOML configuration file (environment variables OMSERVER_<KEY> override it).
    #[arg(long, global = true, env = "OMSERVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP API, plugins.d watcher, jobs.
    Serve,
    /// List the modules in plugins.d with their status.
    Modules,
    /// Manage the inventory.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Run a module now, in this process, and print each host's result. Exit code 0 only if every host is ok; 3 when
    /// an approval policy holds the job (the server runs it once approved).
    Run {
        #[arg(long)]
        module: u32,
        /// A host by inventory name or IP; repeat for more.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// A parameter as key=value; repeat for more.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// An available backend (local, ssh, ansible, saltstack, func); `auto_platform` when absent.
        #[arg(long)]
        backend: Option<String>,
        /// Roll out in batches of this many hosts, or this share of them (`25%`).
        #[arg(long, value_parser = parse_amount)]
        batch: Option<Amount>,
        /// With --batch: start no new batch once more hosts than this (or this share) are not ok.
        #[arg(long, value_parser = parse_amount, requires = "batch")]
        max_failed: Option<Amount>,
        /// With --batch: seconds to wait between batches.
        #[arg(long, default_value_t = 0, requires = "batch")]
        pause_secs: u64,
    },
    /// Run a finished job again as a new job, on all its hosts or only on those that were not ok.
    Rerun {
        /// The job to run again.
        job: i64,
        /// Only the hosts that were not ok (failed, unreachable, cancelled, skipped, no result).
        #[arg(long)]
        not_ok: bool,
    },
    /// Saved jobs (templates): list, show, create and edit from JSON, delete, run.
    #[command(subcommand)]
    Template(saved::TemplateCommand),
    /// Schedules of saved jobs: list, create, enable, disable, delete, fires.
    #[command(subcommand)]
    Schedule(saved::ScheduleCommand),
    /// Notifications: channels, subscriptions, the delivery log.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Execution backends.
    #[command(subcommand)]
    Backends(BackendsCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage console users.
    #[command(subcommand)]
    User(UserCommand),
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// A module worker, started by the server itself (never by hand): loads one library and runs its jobs over
    /// the socket on standard input.
    #[command(hide = true)]
    Worker(crate::worker::child::WorkerArgs),
}

#[derive(Debug, Subcommand)]
enum BackendsCommand {
    /// Check every configured backend (key files, known hosts, the tool's binary, salt-api login, certificates)
    /// and say exactly what is wrong. Exit code 0 only if all are healthy.
    Check,
}

#[derive(Debug, Subcommand)]
enum HostsCommand {
    /// Add a host.
    Add {
        name: String,
        ip: String,
        #[arg(long)]
        wan_ip: Option<String>,
        #[arg(long)]
        op: Option<String>,
        /// Function category, e.g. Linux.Web (with --app).
        #[arg(long, requires = "app")]
        function: Option<String>,
        /// App category, e.g. nginx (with --function).
        #[arg(long, requires = "function")]
        app: Option<String>,
        /// SSH port for the ssh and ansible backends (their default when absent).
        #[arg(long)]
        port: Option<u32>,
        /// Login user for the ssh and ansible backends (their default when absent).
        #[arg(long)]
        user: Option<String>,
    },
    /// List the hosts.
    List,
    /// Fetch the SSH host key a host presents, print its fingerprint and record it in the known-hosts file of
    /// `[backends.ssh]` (else `[backends.ansible]`). A different key already recorded there is not replaced.
    Trust {
        /// The host's inventory name or IP.
        host: String,
    },
    /// Create an agent token for one host (for omaudit-agent) and print it, alone, on stdout.
    Token {
        /// The host's inventory name or IP.
        host: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it, alone, on stdout.
    Create {
        /// What the token is for (shown in listings).
        #[arg(conflicts_with = "name_option")]
        name: Option<String>,
        /// The same as NAME (the older spelling).
        #[arg(long = "name", id = "name_option", hide = true)]
        name_option: Option<String>,
        #[arg(long, default_value = "admin", value_parser = ["viewer", "operator", "admin"])]
        role: String,
        /// The user the token belongs to: it acts with the lower of its role and the user's, and stops working
        /// when the user is disabled. Without it the token belongs to no one and keeps its own role.
        #[arg(long)]
        user: Option<String>,
    },
    /// List live tokens: id, name, role, user (or host), created, last used.
    List,
    /// Revoke a token by its id (from `token list`).
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from standard input; on a terminal, an empty line generates one, which is
    /// printed once.
    Add {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// List users with their role and state.
    List,
    /// Set a user's password (read like `user add`'s). Its sessions end.
    Passwd { name: String },
    /// Disable a user: its sessions end at once and its tokens stop working.
    Disable { name: String },
    /// Let a disabled user log in again; its tokens work again too.
    Enable { name: String },
    /// Give a user another role, from its next request on (the last enabled admin keeps theirs).
    Role {
        name: String,
        #[arg(value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{text:?} is not key=value"))
}

impl Cli {
    /// The worker's arguments when this process is a module worker: it must not start the async runtime or read
    /// the configuration (see `main.rs`).
    pub fn worker(&self) -> Option<&crate::worker::child::WorkerArgs> {
        match &self.command {
            Command::Worker(args) => Some(args),
            _ => None,
        }
    }

    /// Quieter logs for one-shot commands, whose output is for people and scripts.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Serve => "info,sqlx=warn",
            _ => "warn",
        }
    }

    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let config = Config::load(self.config.as_deref())?;
        match self.command {
            Command::Serve => serve(config).await,
            Command::Modules => modules(config).await,
            Command::Hosts(cmd) => hosts(config, cmd).await,
            Command::Run { module, hosts, params, backend, batch, max_failed, pause_secs } => {
                let rollout = batch.map(|batch| Rollout { batch, max_failed, pause_secs });
                let params = params.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                let request = JobRequest { module, hosts, params, backend, rollout };
                run(App::open(config).await?, Launch::New(request)).await
            }
            Command::Rerun { job, not_ok } => {
                let which = if not_ok { RerunHosts::NotOk } else { RerunHosts::All };
                run(App::open(config).await?, Launch::Rerun(job, which)).await
            }
            Command::Template(cmd) => saved::template(config, cmd).await,
            Command::Schedule(cmd) => saved::schedule(config, cmd).await,
            Command::Notify(cmd) => notify::notify(config, cmd).await,
            Command::Backends(BackendsCommand::Check) => backends_check(config).await,
            Command::Audit(cmd) => audit::audit(config, cmd).await,
            Command::Worker(args) => Ok(crate::worker::child::main(&args)),
            Command::Token(cmd) => token(config, cmd).await,
            Command::User(cmd) => user(config, cmd).await,
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = config.url_scheme();
    let app = App::open(config).await?;
    let first = app.bootstrap().await?;
    if let Some(token) = &first.token {
        println!("First start: an admin token was created. It is shown only this once; store it now:\n\n    {token}\n");
        println!("Try: curl -H 'Authorization: Bearer {token}' {scheme}://{addr}/api/modules");
    }
    if let Some(password) = &first.admin_password {
        println!("The console user `admin` was created; its password is shown only this once:");
        println!("admin password: {password}");
    }
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        trigger.cancel();
    });
    // Scripts and tests read this line to find the port when `listen` asks for port 0; it comes once plugins.d
    // is watched, so a module dropped in right after it is seen.
    app.serve(listener, shutdown, |addr| println!("omserver listening on {scheme}://{addr}")).await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn modules(config: Config) -> anyhow::Result<ExitCode> {
    let app = App::open(config).await?;
    for m in app.registry.list() {
        let id = m.id.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
        let what = match (&m.name, &m.version, &m.error) {
            (_, _, Some(error)) => format!("rejected: {error}"),
            (Some(name), Some(version), None) => format!("{name} {version}"),
            _ => String::new(),
        };
        println!("{id:>6}  {:<24} {what}", m.file);
    }
    Ok(ExitCode::SUCCESS)
}

async fn hosts(config: Config, cmd: HostsCommand) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database_url).await?;
    match cmd {
        HostsCommand::Add { name, ip, wan_ip, op, function, app, port, user } => {
            let form = serde_json::json!({
                "name": name, "ip": ip, "wan_ip": wan_ip, "op": op, "function": function, "app": app,
                "port": port, "user": user,
            });
            let host: NewHost =
                crate::http::validate_host(serde_json::from_value(form)?).map_err(|e| anyhow::anyhow!("{e}"))?;
            let row = store.add_host(&host).await?;
            let change = Change::ok("host.add", format!("host {} ({})", row.name, row.ip)).fields(&row);
            Recorder::open(&config, &store)?.record(change).await;
            println!("added {} ({})", row.name, row.ip);
        }
        HostsCommand::Token { host } => {
            let Some(row) = store.find_hosts(std::slice::from_ref(&host)).await?.into_iter().next() else {
                bail!("no host {host:?} in the inventory (add it with `omserver hosts add`)");
            };
            let name = format!("agent:{}", row.name);
            let token = tokens(&config, &store)?.create_for_host(&name, row.id).await?;
            let change =
                Change::ok("token.create", format!("token {name}")).with("role", "agent").with("host", &row.name);
            Recorder::open(&config, &store)?.record(change).await;
            println!("{token}");
        }
        HostsCommand::Trust { host } => return trust(&config, &store, &host).await,
        HostsCommand::List => {
            for h in store.list_hosts().await? {
                let category = match (&h.function, &h.app) {
                    (Some(f), Some(a)) => format!("{f} / {a}"),
                    _ => String::new(),
                };
                println!("{:<24} {:<39} {category}", h.name, h.ip);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `omserver hosts trust NAME`: what the host presents, then recorded (or why not).
async fn trust(config: &Config, store: &Store, host: &str) -> anyhow::Result<ExitCode> {
    let Some(row) = store.find_hosts(&[host.to_owned()]).await?.into_iter().next() else {
        bail!("no host {host:?} in the inventory (add it with `omserver hosts add`)");
    };
    let (default_port, known_hosts, timeout) = match (&config.backends.ssh, &config.backends.ansible) {
        (Some(ssh), _) => (ssh.port, ssh.known_hosts_file.clone(), ssh.connect_timeout_secs),
        (None, Some(ansible)) => (ansible.port, ansible.known_hosts_file.clone(), ansible.connect_timeout_secs),
        (None, None) => {
            bail!("neither [backends.ssh] nor [backends.ansible] is configured: no known-hosts file to record in")
        }
    };
    let port = row.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(default_port);
    let presented = ssh::presented_key(&row.ip, port, std::time::Duration::from_secs(timeout)).await?;
    println!("{} ({}:{port}) presents {} {}", row.name, row.ip, presented.algorithm, presented.fingerprint);
    match ssh::trust(&known_hosts, &row.ip, port, &presented)? {
        ssh::Trusted::Recorded => {
            let change = Change::ok("host.trust", format!("host {} ({})", row.name, row.ip))
                .with("key", format!("{} {}", presented.algorithm, presented.fingerprint))
                .with("known_hosts", known_hosts.display().to_string());
            Recorder::open(config, store)?.record(change).await;
            println!("recorded in {}", known_hosts.display());
        }
        ssh::Trusted::AlreadyKnown => println!("already trusted in {}", known_hosts.display()),
    }
    Ok(ExitCode::SUCCESS)
}

async fn backends_check(config: Config) -> anyhow::Result<ExitCode> {
    let limits = Limits { command_timeout: config.command_timeout(), output_limit_bytes: config.output_limit_bytes };
    let backends = Backends::new(&config.auto_platform, &config.backends, limits, &config.state_dir)?;
    let mut all_ok = true;
    for h in backends.health().await {
        all_ok &= h.ok;
        let mark = if h.ok { "ok" } else { "PROBLEM" };
        let default = if h.default { " (default)" } else { "" };
        println!("{:<10} {mark:<8} {}{default}", h.backend, h.detail);
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn secret_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    auth::secret_key(config.secret_key.as_deref(), &config.state_dir)
        .with_context(|| format!("secret key in {}", config.state_dir.display()))
}

/// Token issuing without the rest of the server (no module scan, no audit writer).
fn tokens(config: &Config, store: &Store) -> anyhow::Result<Tokens> {
    Ok(Tokens::new(store.clone(), secret_key(config)?))
}

async fn token(config: Config, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database_url).await?;
    let tokens = tokens(&config, &store)?;
    match cmd {
        TokenCommand::Create { name, name_option, role, user } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let name = name.or(name_option).unwrap_or_else(|| "cli".to_owned());
            let owner = match user {
                Some(user) => {
                    let row = users(&config, &store)?.get(&user).await?;
                    if row.disabled_at.is_some() {
                        bail!("user {} is disabled", row.name);
                    }
                    Some(row)
                }
                None => None,
            };
            let (id, token) = tokens.create_owned(&name, role, owner.as_ref()).await?;
            let change = Change::ok("token.create", format!("token {id} ({name})"))
                .with("role", role)
                .with("user", owner.as_ref().map(|u| &u.name));
            Recorder::open(&config, &store)?.record(change).await;
            println!("{token}");
        }
        TokenCommand::List => {
            let now = crate::store::now_ms();
            for t in store.list_tokens(crate::store::TokenScope::All).await? {
                let owner = match (&t.user, &t.host) {
                    (Some(user), _) => format!("user {user}"),
                    (None, Some(host)) => format!("host {host}"),
                    (None, None) => "-".to_owned(),
                };
                let used = t.last_used_at.map(|at| ago(now, at)).unwrap_or_else(|| "never".to_owned());
                println!(
                    "{:>5}  {:<24} {:<9} {:<24} created {:<10} used {used}",
                    t.id,
                    t.name,
                    t.role,
                    owner,
                    ago(now, t.created_at)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke_token(id).await? {
                bail!("no live token with id {id}");
            }
            Recorder::open(&config, &store)?.record(Change::ok("token.revoke", format!("token {id}"))).await;
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `3m ago`-style age of a Unix-ms time.
fn ago(now: i64, at: i64) -> String {
    let secs = (now - at).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database_url).await?;
    let users = users(&config, &store)?;
    let log = Recorder::open(&config, &store)?;
    match cmd {
        UserCommand::Add { name, role } => {
            let role = crate::users::user_role(&role)?;
            let (password, generated) = read_password()?;
            let row = users.add(&name, &password, role).await?;
            let change = Change::ok("user.add", format!("user {}", row.name)).with("role", &row.role);
            log.record(change.with("password_generated", generated)).await;
            println!("added user {} ({})", row.name, row.role);
            if generated {
                println!("password (shown only this once): {password}");
            }
        }
        UserCommand::List => {
            for u in users.list().await? {
                let state = if u.disabled_at.is_some() { "disabled" } else { "active" };
                println!("{:<24} {:<9} {state}", u.name, u.role);
            }
        }
        UserCommand::Passwd { name } => {
            let (password, generated) = read_password()?;
            users.set_password(&name, &password).await?;
            log.record(Change::ok("user.password", format!("user {}", UserName::parse(&name)?))).await;
            println!("password of {} changed; its sessions ended", UserName::parse(&name)?);
            if generated {
                println!("password (shown only this once): {password}");
            }
        }
        UserCommand::Disable { name } => {
            users.disable(&name).await?;
            log.record(Change::ok("user.disable", format!("user {}", UserName::parse(&name)?))).await;
            println!("disabled {}; its sessions ended and its tokens stop working", UserName::parse(&name)?);
        }
        UserCommand::Enable { name } => {
            users.enable(&name).await?;
            log.record(Change::ok("user.enable", format!("user {}", UserName::parse(&name)?))).await;
            println!("enabled {}; it can log in and its tokens work again", UserName::parse(&name)?);
        }
        UserCommand::Role { name, role } => {
            let before = users.get(&name).await?.role;
            users.set_role(&name, crate::users::user_role(&role)?).await?;
            let after = users.get(&name).await?.role;
            log.record(
                Change::ok("user.role", format!("user {}", UserName::parse(&name)?)).diff("role", before, after),
            )
            .await;
            println!("{} is now {role}", UserName::parse(&name)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A password from standard input: its first line. On a terminal it is asked for without echo, and an empty
/// line means "generate one" (the `bool`: print it once). Piped input must hold one: an empty pipe is a
/// mistake, not a request for a password nobody will see.
fn read_password() -> anyhow::Result<(String, bool)> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut line = String::new();
    if terminal {
        eprint!("password (empty: generate one): ");
        std::io::stderr().flush()?;
        let _quiet = EchoOff::new();
        stdin.lock().read_line(&mut line)?;
        eprintln!();
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    match (password.is_empty(), terminal) {
        (false, _) => Ok((password.to_owned(), false)),
        (true, true) => Ok((crate::users::password::generate(), true)),
        (true, false) => bail!("no password on standard input (pipe one in, or run on a terminal to generate one)"),
    }
}

/// Turns the terminal's echo off while alive, so that a typed password is not shown.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; failure (not a terminal) leaves it alone.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut term) != 0 {
                return EchoOff(None);
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

/// Users without the rest of the server.
fn users(config: &Config, store: &Store) -> anyhow::Result<Users> {
    Ok(Users::new(store.clone(), &secret_key(config)?, config.sessions()))
}
