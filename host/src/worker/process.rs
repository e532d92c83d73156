//! One worker process as the server sees it: started, greeted, given its library, asked to run jobs, and killed.
//!
//! Three small tasks own the process's pipes so that the job's side is a plain `select!` over channels (reading
//! or writing a frame is not cancel-safe; receiving from a channel is): one reads frames, one writes them, one
//! keeps the last lines of its stderr for the fault message and logs them.

use std::{
    collections::VecDeque,
    os::{fd::OwnedFd, unix::process::ExitStatusExt},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{future::BoxFuture, stream::FuturesUnordered, StreamExt};
use omserver_plugin_api::{HostResult, InitRequest, Metadata, Target};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use super::{
    protocol::{self, decode, frame, Call, FromWorker, ProtocolError, ToWorker, WireResult},
    Fault, WorkerConfig,
};
use crate::backends::{kill_tree, JobHandle};

/// How long a stopped module gets to return what it has before its worker is killed.
pub const GRACE: Duration = Duration::from_secs(2);
/// Calls one module may have in flight at once; more are answered with a failure at once.
const MAX_CALLS_IN_FLIGHT: usize = 16;
/// Lines of stderr kept for a fault message, and the longest line kept.
const TAIL_LINES: usize = 8;
const TAIL_LINE_BYTES: usize = 512;
/// Lines of a worker's stderr logged over its life; the rest is counted, not logged (a module spewing output
/// must not flood the server's log).
const LOGGED_LINES: usize = 200;

/// How a run ended, when the module did not return normally.
#[derive(Debug)]
pub enum RunError {
    /// The worker crashed, exited or broke the protocol.
    Fault(Fault),
    /// Stopped (cancel or timeout) and still running after the grace period: killed.
    Overdue,
}

pub struct WorkerProcess {
    child: Child,
    pub pid: u32,
    pub sha256: String,
    frames: mpsc::UnboundedReceiver<Result<Vec<u8>, ProtocolError>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// CPU time the worker had used after its last run.
    pub cpu_ms: u64,
    pub idle_since: Instant,
}

/// What the writer task sends to the worker: a framed message, or the library, which is written straight from the
/// server's one copy of it (a framed copy per load was 5 MiB more for every worker started).
enum Outgoing {
    Frame(Vec<u8>),
    Library(Arc<[u8]>),
}

impl WorkerProcess {
    /// Starts a worker and waits for its `Hello` (within `deadline`).
    pub async fn spawn(config: &WorkerConfig, sha256: &str, deadline: Duration) -> Result<WorkerProcess, Fault> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Fault::Start)?;
        let mut command = Command::new(&config.program);
        command
            .arg("worker")
            .arg("--memory-limit-mb")
            .arg(config.memory_limit_mb.to_string())
            .arg("--cpu-limit-secs")
            .arg(config.cpu_limit_secs.to_string())
            .arg("--open-files")
            .arg(config.open_files.to_string())
            .env_clear()
            // The binary's allocator (mimalloc) reserves 1 GiB of address space up front, which RLIMIT_AS counts:
            // reserve in small steps so the memory limit is the module's to use.
            .env("MIMALLOC_ARENA_RESERVE", "16MiB")
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group: killing the group also ends whatever the module started.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(user) = &config.user {
            // std sets the group, drops supplementary groups and sets the user in the child before exec.
            command.uid(user.uid).gid(user.gid);
        }
        let mut child = command.spawn().map_err(Fault::Start)?;
        let pid = child.id().unwrap_or_default();
        ours.set_nonblocking(true).map_err(Fault::Start)?;
        let socket = tokio::net::UnixStream::from_std(ours).map_err(Fault::Start)?;
        let (read_half, mut write_half) = socket.into_split();

        let (frame_tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut read_half = read_half;
            loop {
                let frame = protocol::read_frame_async(&mut read_half).await;
                let end = frame.is_err();
                if frame_tx.send(frame).is_err() || end {
                    break;
                }
            }
        });
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Outgoing>();
        tokio::spawn(async move {
            while let Some(item) = to_send.recv().await {
                let written = match item {
                    Outgoing::Frame(bytes) => write_half.write_all(&bytes).await,
                    Outgoing::Library(library) => {
                        let header = (library.len() as u32).to_be_bytes();
                        match write_half.write_all(&header).await {
                            Ok(()) => write_half.write_all(&library).await,
                            Err(e) => Err(e),
                        }
                    }
                };
                if written.is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_tail(stderr, tail.clone(), pid));
        }
        metrics::counter!("omserver_module_workers_started_total").increment(1);
        let mut process = WorkerProcess {
            child,
            pid,
            sha256: sha256.to_owned(),
            frames,
            outgoing,
            tail,
            cpu_ms: 0,
            idle_since: Instant::now(),
        };
        match tokio::time::timeout(deadline, process.next_message()).await {
            Err(_) => Err(process.kill_for(Fault::TimedOut(deadline)).await),
            Ok(Err(fault)) => Err(fault),
            Ok(Ok(FromWorker::Hello { protocol })) if protocol == protocol::PROTOCOL_VERSION => Ok(process),
            Ok(Ok(FromWorker::Hello { protocol })) => Err(process
                .kill_for(Fault::Protocol(format!(
                    "the worker speaks protocol {protocol}, this server {} (was omserver upgraded without a \
                     restart?)",
                    protocol::PROTOCOL_VERSION
                )))
                .await),
            Ok(Ok(other)) => Err(process.kill_for(unexpected(&other, "Hello")).await),
        }
    }

    /// Sends the library and waits (within `deadline`) for its metadata.
    pub async fn load(&mut self, library: Arc<[u8]>, deadline: Duration) -> Result<Metadata, Fault> {
        self.send(&ToWorker::Load)?;
        let _ = self.outgoing.send(Outgoing::Library(library));
        match tokio::time::timeout(deadline, self.next_message()).await {
            Err(_) => Err(Fault::TimedOut(deadline)),
            Ok(Err(fault)) => Err(fault),
            Ok(Ok(FromWorker::Loaded { metadata })) => Ok(metadata.into()),
            Ok(Ok(FromWorker::LoadFailed { reason })) => Err(Fault::Refused(reason)),
            Ok(Ok(other)) => Err(unexpected(&other, "Loaded")),
        }
    }

    /// Runs one job's module: sends `Run`, carries out the module's calls through `handle`, passes a cancel on,
    /// and returns the module's own outcome. A stopped module gets [`GRACE`] to return before this gives up.
    pub async fn run(
        &mut self,
        init: &InitRequest,
        handle: &JobHandle,
        cancel: &CancellationToken,
    ) -> Result<Result<Vec<HostResult>, String>, RunError> {
        let backend = handle.backend_name().to_owned();
        self.send(&ToWorker::Run { init: init.into(), backend }).map_err(RunError::Fault)?;
        // Boxed as `Send` explicitly: with the futures' own types rustc cannot prove the job's task is `Send`
        // (a known limit of its auto-trait checks on async code that borrows).
        let mut calls: FuturesUnordered<BoxFuture<'_, (u64, Vec<HostResult>)>> = FuturesUnordered::new();
        // Armed by the cancel: until then it lies far in the future and its branch is off.
        let grace = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(grace);
        let mut stopped = false;
        loop {
            tokio::select! {
                message = self.next_message() => match message.map_err(RunError::Fault)? {
                    FromWorker::Call { id, call } if calls.len() < MAX_CALLS_IN_FLIGHT => {
                        calls.push(Box::pin(carry_out(handle, id, call)));
                    }
                    FromWorker::Call { id, call } => {
                        let hosts = match call { Call::Run { hosts, .. } | Call::Copy { hosts, .. } => hosts };
                        let message = format!("more than {MAX_CALLS_IN_FLIGHT} calls at once");
                        let results = hosts.iter().map(|h| WireResult::from(HostResult::failed(&h.name, &message)));
                        self.send(&ToWorker::Answer { id, results: results.collect() }).map_err(RunError::Fault)?;
                    }
                    FromWorker::Finished { outcome, cpu_ms } => {
                        self.cpu_ms = cpu_ms;
                        self.idle_since = Instant::now();
                        return Ok(outcome.map(|results| results.into_iter().map(HostResult::from).collect()));
                    }
                    other => return Err(RunError::Fault(unexpected(&other, "Call or Finished"))),
                },
                Some((id, results)) = calls.next(), if !calls.is_empty() => {
                    let results = results.into_iter().map(WireResult::from).collect();
                    self.send(&ToWorker::Answer { id, results }).map_err(RunError::Fault)?;
                }
                _ = cancel.cancelled(), if !stopped => {
                    self.send(&ToWorker::Cancel).map_err(RunError::Fault)?;
                    grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
                    stopped = true;
                }
                _ = &mut grace, if stopped => return Err(RunError::Overdue),
            }
        }
    }

    /// Kills the worker, everything it started, and reaps it.
    pub async fn kill(mut self) {
        self.terminate().await;
    }

    /// Kills the worker and returns `fault` (for the cases where the fault is known already).
    async fn kill_for(mut self, fault: Fault) -> Fault {
        self.terminate().await;
        fault
    }

    async fn terminate(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            kill_tree(pid);
        }
        let _ = self.child.wait().await;
    }

    /// True while the process runs (an idle worker may have been killed from outside).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn send(&self, message: &ToWorker) -> Result<(), Fault> {
        let bytes = frame(message).map_err(|e| Fault::Protocol(e.to_string()))?;
        // A closed writer means the worker is gone; the reader reports how.
        let _ = self.outgoing.send(Outgoing::Frame(bytes));
        Ok(())
    }

    /// The next message; when the stream ends, why the worker went away.
    async fn next_message(&mut self) -> Result<FromWorker, Fault> {
        match self.frames.recv().await {
            Some(Ok(bytes)) => decode::<FromWorker>(&bytes).map_err(|e| Fault::Protocol(e.to_string())),
            Some(Err(ProtocolError::Closed)) | None => Err(self.exit_fault().await),
            Some(Err(err)) => Err(Fault::Protocol(err.to_string())),
        }
    }

    /// The worker closed its end: wait briefly for its exit status and describe it.
    async fn exit_fault(&mut self) -> Fault {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                self.terminate().await;
                return Fault::Protocol("the worker closed its connection but kept running".to_owned());
            }
        };
        // The stderr task may still be reading the last lines: give it a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let tail: Vec<String> = self.tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        Fault::Exited { status: describe(status), tail }
    }
}

fn unexpected(got: &FromWorker, wanted: &str) -> Fault {
    let name = match got {
        FromWorker::Hello { .. } => "Hello",
        FromWorker::Loaded { .. } => "Loaded",
        FromWorker::LoadFailed { .. } => "LoadFailed",
        FromWorker::Call { .. } => "Call",
        FromWorker::Finished { .. } => "Finished",
    };
    Fault::Protocol(format!("expected {wanted}, the worker sent {name}"))
}

/// Carries out one of the module's calls through the job's handle (which checks hosts and file names).
async fn carry_out(handle: &JobHandle, id: u64, call: Call) -> (u64, Vec<HostResult>) {
    let results = match call {
        Call::Run { hosts, argv } => {
            let targets: Vec<Target> = hosts.into_iter().map(Target::from).collect();
            handle.run(&targets, &argv).await
        }
        Call::Copy { hosts, source, dest, mode } => {
            let targets: Vec<Target> = hosts.into_iter().map(Target::from).collect();
            handle.copy_file(&targets, &source, &dest, mode).await
        }
    };
    (id, results)
}

/// "killed by SIGSEGV (segmentation fault)" or "exited with code 3".
fn describe(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        let (name, meaning) = match signal {
            libc::SIGSEGV => ("SIGSEGV", "segmentation fault"),
            libc::SIGABRT => ("SIGABRT", "aborted"),
            libc::SIGBUS => ("SIGBUS", "bus error"),
            libc::SIGILL => ("SIGILL", "illegal instruction"),
            libc::SIGFPE => ("SIGFPE", "arithmetic error"),
            libc::SIGKILL => ("SIGKILL", "killed"),
            libc::SIGTERM => ("SIGTERM", "terminated"),
            libc::SIGXCPU => ("SIGXCPU", "CPU time limit reached"),
            libc::SIGSYS => ("SIGSYS", "bad system call"),
            _ => return format!("killed by signal {signal}"),
        };
        return format!("killed by {name} ({meaning})");
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "ended".to_owned(),
    }
}

async fn keep_tail(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>, pid: u32) {
    let mut lines = BufReader::new(stderr);
    let (mut logged, mut line) = (0usize, Vec::new());
    loop {
        line.clear();
        // Bounded: a line without end is cut, not buffered without limit.
        match (&mut lines).take(64 * 1024).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let kept: String = text.chars().take(TAIL_LINE_BYTES).collect();
        if logged < LOGGED_LINES {
            tracing::warn!(worker_pid = pid, line = %kept, "module worker stderr");
        } else if logged == LOGGED_LINES {
            tracing::warn!(worker_pid = pid, "module worker stderr: further lines not logged");
        }
        logged += 1;
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(kept);
    }
}
