//! Wiring: from a [`Config`] to a running server. `main.rs` and the tests both start the server through here.

use std::{collections::HashMap, sync::Arc, sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    activity::{Activity, Actor},
    approvals::Approvals,
    audit::AuditService,
    auth::{self, Role, Tokens},
    backends::{BackendError, Backends, Limits},
    cluster::{lead::lead, Cluster},
    config::Config,
    http::{self, AppState},
    jobs::{JobService, JobSettings},
    notify::{self, Notifications},
    plugins::{watch, Registry},
    schedules::{Scheduler, Schedules},
    store::{Dialect, JoinError, NewHost, Store, StoreError},
    templates::Templates,
    users::{UserError, Users},
    worker::{WorkerConfig, WorkerUser, Workers},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("watching the plugins directory: {0}")]
    Watch(#[from] ::notify::Error),
    #[error("module workers: {0}")]
    Worker(String),
    #[error("HTTPS: {0}")]
    Tls(#[from] http::tls::TlsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another server holds this one's name, or the database allows one server and another serves it.
    #[error("{0}")]
    Taken(String),
}

impl From<JoinError> for StartError {
    fn from(err: JoinError) -> StartError {
        match err {
            JoinError::Taken(why) => StartError::Taken(why),
            JoinError::Store(e) => StartError::Store(e),
        }
    }
}

/// With `module_user`, what the server reads must not be readable by other users: `state_dir` (the secret key,
/// library copies) is made private, and a configuration file others may read (database passwords, salt-api
/// credentials) is refused rather than silently changed, the way sshd's StrictModes refuses loose key files.
fn keep_from_workers(config: &Config) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(io(format!("state directory {}", config.state_dir.display())))?;
    std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("making {} private", config.state_dir.display())))?;
    if let Some(file) = &config.source {
        let mode =
            std::fs::metadata(file).map_err(io(format!("configuration {}", file.display())))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StartError::Worker(format!(
                "module_user is set but {} is readable by other users (mode {:o}), so modules could read it: \
                 chmod 600 {}",
                file.display(),
                mode & 0o777,
                file.display()
            )));
        }
    }
    Ok(())
}

/// The workers' settings from the `module_*` keys.
fn worker_config(config: &Config) -> Result<WorkerConfig, StartError> {
    let program = match &config.module_worker_program {
        // Absolute: workers start in `/`, where a relative path would name another file.
        Some(program) => {
            std::path::absolute(program).map_err(io(format!("module_worker_program {}", program.display())))?
        }
        None => std::env::current_exe().map_err(io("the server's own executable (to start module workers)"))?,
    };
    let user = match &config.module_user {
        Some(name) => {
            let user = WorkerUser::lookup(name).map_err(|e| StartError::Worker(e.to_string()))?;
            keep_from_workers(config)?;
            Some(user)
        }
        None => None,
    };
    Ok(WorkerConfig {
        program,
        memory_limit_mb: config.module_memory_limit_mb,
        cpu_limit_secs: config.module_cpu_limit_secs,
        open_files: config.module_open_files,
        user,
        probe_timeout: Duration::from_secs(config.module_probe_timeout_secs),
        max_idle: config.max_concurrent_jobs.max(1),
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// The error of a job this server's previous process left unfinished.
const INTERRUPTED: &str = "interrupted: the server stopped before the job finished";

/// How long shutdown waits for requests in flight once it stopped accepting.
const DRAIN: Duration = Duration::from_secs(5);

/// The server's parts, opened but not yet serving.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub jobs: Arc<JobService>,
    pub templates: Arc<Templates>,
    pub schedules: Arc<Schedules>,
    pub notify: Arc<Notifications>,
    pub tokens: Tokens,
    pub users: Arc<Users>,
    pub audit: Arc<AuditService>,
    /// The activity log: who changed what, chained.
    pub activity: Activity,
    /// HTTPS settings when `tls_cert_file` and `tls_key_file` are set; read at open, so a bad file stops start-up.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a first start created, each shown once.
#[derive(Default)]
pub struct Bootstrap {
    /// The first admin token, when the database had no token.
    pub token: Option<String>,
    /// The generated password of the user `admin`, when the database had no user.
    pub admin_password: Option<String>,
}

impl App {
    /// Connects and migrates the database, loads the modules in plugins.d once, and prepares the backend.
    pub async fn open(config: Config) -> Result<App, StartError> {
        let tls = config.tls()?.map(|files| http::tls::server_config(&files)).transpose()?;
        let store = Store::connect_with(&config.database_url, config.database_connections).await?;
        let key = auth::secret_key(config.secret_key.as_deref(), &config.state_dir)
            .map_err(io(format!("secret key in {}", config.state_dir.display())))?;
        let audit = AuditService::start(
            store.clone(),
            store.audit_sink()?,
            config.audit.clone(),
            auth::derive_key(&key, crate::audit::CHAIN_KEY_PURPOSE),
        )?;
        let users = Arc::new(Users::new(store.clone(), &key, config.sessions()));
        let activity = Activity::new(store.clone(), &auth::derive_key(&key, crate::activity::ACTIVITY_KEY_PURPOSE));
        audit.reload_alerts().await?;
        let tokens = Tokens::new(store.clone(), key);

        std::fs::create_dir_all(&config.plugins_dir)
            .map_err(io(format!("plugins directory {}", config.plugins_dir.display())))?;
        std::fs::create_dir_all(&config.files_dir).map_err(io(format!("file store {}", config.files_dir.display())))?;
        let workers = Arc::new(Workers::new(worker_config(&config)?));
        workers.self_check().await.map_err(|fault| StartError::Worker(fault.to_string()))?;
        let registry = Arc::new(Registry::new(&config.plugins_dir, workers.clone()));
        // A file copied in just before start-up is still settling: give it a moment rather than skip it.
        let mut first = registry.reconcile().await;
        for _ in 0..10 {
            if !first.unsettled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            first.extend(registry.reconcile().await);
        }
        for change in std::mem::take(&mut first.changes) {
            activity.record(&Actor::internal("server"), change).await;
        }
        tracing::info!(loaded = first.loaded.len(), rejected = first.rejected.len(), dir = %config.plugins_dir.display(), "modules scanned");

        let limits =
            Limits { command_timeout: config.command_timeout(), output_limit_bytes: config.output_limit_bytes };
        let backends = Arc::new(Backends::new(&config.auto_platform, &config.backends, limits, &config.state_dir)?);
        let module_settings: HashMap<u32, Vec<(String, String)>> = config
            .modules
            .keys()
            .filter_map(|id| id.parse::<u32>().ok())
            .map(|id| (id, config.module_settings(id)))
            .collect();
        let settings = JobSettings {
            timeout: config.job_timeout(),
            max_concurrent: config.max_concurrent_jobs,
            files_dir: config.files_dir.clone(),
            module_settings,
            node: config.node_name()?,
        };
        let jobs = Arc::new(JobService::new(store.clone(), registry.clone(), workers, backends, settings));
        let templates = Arc::new(Templates::new(store.clone(), jobs.clone()));
        let schedules = Arc::new(Schedules::new(store.clone()));
        let notify = Notifications::new(store.clone(), config.notify.clone(), config.public_url());
        Ok(App { config, store, registry, jobs, templates, schedules, notify, tokens, users, audit, activity, tls })
    }

    /// First start with an empty database: create an admin token and the user `admin` with a generated password
    /// (returned, to be printed once) and register this machine so that the first job has a target. Each is made
    /// only when none of its kind exists, so a database from before users existed gets its `admin` user.
    pub async fn bootstrap(&self) -> Result<Bootstrap, StartError> {
        if self.store.host_count().await? == 0 {
            let localhost = NewHost {
                name: "localhost".into(),
                ip: "127.0.0.1".into(),
                wan_ip: None,
                op: None,
                category: None,
                tags: Vec::new(),
                port: None,
                user: None,
            };
            match self.store.add_host(&localhost).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut made = Bootstrap::default();
        if self.store.user_count().await? == 0 {
            let password = crate::users::password::generate();
            match self.users.add("admin", &password, Role::Admin).await {
                Ok(_) => made.admin_password = Some(password),
                // Another process made the first user meanwhile: that one's password was printed there.
                Err(UserError::Store(StoreError::Conflict(_))) => {}
                Err(UserError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(StartError::Io {
                        what: "creating the admin user".into(),
                        source: std::io::Error::other(e),
                    })
                }
            }
        }
        if self.store.token_count().await? == 0 {
            made.token = Some(self.tokens.create("first-admin", Role::Admin).await?);
        }
        Ok(made)
    }

    /// Grants: checked against the inventory, the modules loaded and the saved jobs.
    fn access(&self) -> Arc<crate::access::Access> {
        Arc::new(crate::access::Access::new(self.store.clone(), self.registry.clone()))
    }

    /// Approval policies and decisions (their selectors are checked as grants are).
    fn approvals(&self) -> Arc<Approvals> {
        Arc::new(Approvals::new(self.store.clone(), self.jobs.clone(), self.access()))
    }

    /// What the handlers use; `cluster` is this server's place among its database's servers ([`Cluster::join`]).
    pub fn state(&self, cluster: Arc<Cluster>) -> AppState {
        AppState::new(http::Services {
            cluster,
            store: self.store.clone(),
            registry: self.registry.clone(),
            jobs: self.jobs.clone(),
            templates: self.templates.clone(),
            schedules: self.schedules.clone(),
            notify: self.notify.clone(),
            tokens: self.tokens.clone(),
            users: self.users.clone(),
            access: self.access(),
            approvals: self.approvals(),
            activity: self.activity.clone(),
            secure_cookies: self.config.secure_cookies,
            audit: self.audit.clone(),
            metrics: metrics_handle(),
        })
    }

    /// Serves on `listener` and watches plugins.d until `shutdown` is cancelled; then stops accepting, lets
    /// requests in flight finish, and gives running jobs time to record their outcome. `ready` is called once the
    /// watch is set up and requests are about to be served.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        ready: impl FnOnce(std::net::SocketAddr),
    ) -> Result<(), StartError> {
        let addr = listener.local_addr().map_err(io("listener address"))?;
        let address =
            (self.config.node_address.clone()).unwrap_or_else(|| format!("{}://{addr}", self.config.url_scheme()));
        let cluster = Arc::new(Cluster::join(self.store.clone(), self.config.node_name()?, address).await?);
        // Only the serving process owns unfinished jobs: a CLI command opening the same database must not touch
        // them, so this runs here and not in `open`; and only this server's (its name is its own now).
        let interrupted = self.store.fail_unfinished_jobs(cluster.name(), true, INTERRUPTED).await?;
        if !interrupted.is_empty() {
            tracing::warn!(jobs = ?interrupted, "failed jobs left unfinished by the previous run");
        }
        if self.config.public_url.is_none() {
            // Port 0 in `listen` is only known now; links must name the real one.
            self.notify.set_public_url(format!("{}://{addr}", self.config.url_scheme()));
        }
        let watcher = watch::spawn(self.registry.clone(), self.activity.clone(), shutdown.clone())?;
        let sweeper = tokio::spawn(sweep_sessions(self.users.clone(), shutdown.clone()));
        let scheduler =
            Scheduler::new(self.store.clone(), self.templates.clone(), self.schedules.changes(), self.activity.clone());
        let scheduler = tokio::spawn(scheduler.run(shutdown.clone()));
        let approvals = tokio::spawn(self.approvals().run(shutdown.clone()));
        // Other servers' job pages and cancels, where servers share the database; heard until this server's jobs
        // have drained, so that a cancel asked elsewhere still reaches them.
        let signals_stop = CancellationToken::new();
        let job_signals = tokio::spawn(crate::jobs::remote::listen(self.jobs.clone(), signals_stop.clone()));
        // Queued jobs any server may run, where servers share the database: this one takes them while it serves.
        let claims = tokio::spawn(crate::jobs::claim::run(self.jobs.clone(), shutdown.clone()));
        // Notifications: their own tasks, fed by rows and streams; nothing above waits on them. One server of the
        // database runs them at a time (`cluster::lead`): two would send everything twice.
        let notifying = {
            let (notify, registry, audit, jobs) =
                (self.notify.clone(), self.registry.clone(), self.audit.clone(), self.jobs.clone());
            tokio::spawn(lead(self.store.clone(), "notify", shutdown.clone(), move |stop| {
                let tasks = [
                    tokio::spawn(notify::intake::run_events(notify.clone(), registry.clone(), stop.clone())),
                    tokio::spawn(notify::intake::run_alerts(notify.clone(), audit.clone(), stop.clone())),
                    tokio::spawn(notify::deliver::run(notify.clone(), stop.clone())),
                    tokio::spawn(notify::watch::run(
                        notify.clone(),
                        notify::watch::Watched { registry: registry.clone(), jobs: jobs.clone(), audit: audit.clone() },
                        stop,
                    )),
                ];
                async move {
                    for task in tasks {
                        let _ = task.await;
                    }
                }
            }))
        };
        // Retention: its own task, on one server at a time; ingest never waits on it.
        let retention = (self.config.audit.retain_days > 0).then(|| {
            let retention = Arc::new(self.audit.retention(self.config.audit_archive_dir()));
            let days = self.config.audit.retain_days;
            tokio::spawn(lead(self.store.clone(), "audit-retention", shutdown.clone(), move |stop| {
                crate::audit::retention::run(retention.clone(), days, stop)
            }))
        });
        // PostgreSQL's command index: behind every server's audit writer, kept by one server at a time.
        let audit_index = (self.store.dialect() == Dialect::Postgres).then(|| {
            let store = self.store.clone();
            tokio::spawn(lead(self.store.clone(), "audit-index", shutdown.clone(), move |stop| {
                let store = store.clone();
                async move { store.keep_audit_index(stop).await }
            }))
        });
        // Say at start what is wrong with a backend, but serve anyway: the others (and local) still work.
        for health in self.jobs.backends().health().await {
            if health.ok {
                tracing::info!(backend = health.backend, default = health.default, detail = %health.detail, "backend ready");
            } else {
                tracing::error!(backend = health.backend, default = health.default, problem = %health.detail, "backend unhealthy");
            }
        }
        let heartbeat = tokio::spawn(cluster.clone().run(self.registry.clone(), shutdown.clone()));
        let router = http::router(self.state(cluster));
        tracing::info!(%addr, backend = %self.config.auto_platform, "serving");
        ready(addr);
        let stop = shutdown.clone();
        let serving = async {
            if let Some(tls) = self.tls.clone() {
                http::tls::serve(listener, router, tls, stop).await;
                Ok(())
            } else {
                // TCP_NODELAY: live streams write small events one at a time; with Nagle's algorithm each waits
                // for the client's delayed ACK of the one before (~40 ms). Peer addresses are needed by the
                // legacy audit route.
                use axum::serve::ListenerExt;
                let listener = listener.tap_io(|tcp| {
                    if let Err(err) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                    }
                });
                axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
        };
        // A live stream (SSE) never ends by itself, and graceful shutdown waits for every open request: after
        // DRAIN the server stops waiting and goes on to finish its jobs.
        tokio::select! {
            served = serving => served.map_err(io("serving HTTP"))?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN).await } => {
                tracing::warn!(drain_secs = DRAIN.as_secs(), "requests still open at shutdown were dropped");
            }
        }
        // No fire starts a job once the jobs are being drained.
        let _ = scheduler.await;
        let _ = approvals.await;
        let _ = claims.await;
        self.jobs.shutdown(Duration::from_secs(10)).await;
        signals_stop.cancel();
        let _ = job_signals.await;
        // The last jobs' facts are in the outbox: they are sent after the next start (or by another server).
        let _ = notifying.await;
        let _ = watcher.await;
        let _ = sweeper.await;
        // It left the list of servers as shutdown began (while the jobs above still had time to end).
        let _ = heartbeat.await;
        for work in [retention, audit_index].into_iter().flatten() {
            let _ = work.await;
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Deletes expired sessions and forgotten login-throttle counts every minute (or every idle timeout, when that is
/// shorter) until `shutdown`. Expired sessions and forgotten counts are disregarded anyway; this keeps the tables
/// small. Every server of a database sweeps: the second finds nothing left to delete.
async fn sweep_sessions(users: Arc<Users>, shutdown: CancellationToken) {
    // The decoy hash for unknown user names, made before the first login needs it (see users::password).
    if let Err(err) = users.passwords().warm_up().await {
        tracing::warn!(error = %err, "could not prepare password hashing");
    }
    let every = users.settings().idle_timeout.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match users.sweep().await {
            Ok(swept) if swept.sessions == 0 && swept.failure_counts == 0 => {}
            Ok(swept) => tracing::debug!(
                sessions = swept.sessions,
                failure_counts = swept.failure_counts,
                "expired sessions and forgotten failed-login counts deleted"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "could not delete expired sessions or forgotten failed-login counts")
            }
        }
    }
}

/// The process-wide Prometheus recorder. `metrics` allows one global recorder, installed on first use; tests
/// that start several servers in one process share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets make latencies real Prometheus histograms (aggregatable across instances) instead of
            // per-process summaries.
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let builder = PrometheusBuilder::new().set_buckets(&buckets).unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}
