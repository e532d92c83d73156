//! The worker process, `omserver worker`: the only code that maps a module library.
//!
//! Started by the server with a socket on fd 0, an empty environment, cwd `/` and (with `module_user`) already as
//! that user. Before it reads a byte of the library it closes every other descriptor, moves the socket off fd 0,
//! points stdout at stderr (a module's `println!` must not corrupt the protocol), applies its resource limits, and
//! makes itself non-dumpable (another worker of the same user cannot ptrace it) and unable to gain privileges.
//!
//! Then: `Hello`, receive the library, load it from a memfd (the worker cannot read the server's files, and needs
//! none), answer `Loaded` with the metadata, and serve `Run`s until the server closes the socket. The module runs
//! on the main thread; a reader thread answers the module's calls and the cancel flag.

use std::{
    collections::HashMap,
    io::Write,
    os::{fd::FromRawFd, unix::net::UnixStream},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
};

use abi_stable::{
    library::lib_header_from_path,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};
use omserver_plugin_api::{Backend, Backend_TO, HostResult, InitRequest, ModuleLibRef, Target};

use super::protocol::{
    decode, read_frame, write_message, Call, FromWorker, ProtocolError, ToWorker, WireResult, WireTarget,
    PROTOCOL_VERSION,
};

/// The limits the server asks for, on the worker's command line (visible in `ps`, which helps operators).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// RLIMIT_AS, in MiB.
    #[arg(long)]
    pub memory_limit_mb: u64,
    /// RLIMIT_CPU, in seconds.
    #[arg(long)]
    pub cpu_limit_secs: u64,
    /// RLIMIT_NOFILE.
    #[arg(long)]
    pub open_files: u64,
}

/// Runs the worker to its end. Never returns while the server keeps the socket open.
pub fn main(args: &WorkerArgs) -> ExitCode {
    let socket = match prepare(args) {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("omserver worker: cannot start: {err}");
            return ExitCode::from(70);
        }
    };
    match serve(socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("omserver worker: {err}");
            ExitCode::from(71)
        }
    }
}

/// Descriptors, limits and process flags; returns the socket to the server.
fn prepare(args: &WorkerArgs) -> std::io::Result<UnixStream> {
    // The one variable the server passes is for the allocator, which read it when the process was loaded: the
    // module gets an empty environment. Safe here: no other thread exists yet.
    std::env::remove_var("MIMALLOC_ARENA_RESERVE");
    let check = |rc: libc::c_int| if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) };
    // SAFETY: plain system calls on descriptors this process owns; nothing else runs yet (one thread).
    let socket = unsafe {
        check(libc::close_range(3, libc::c_uint::MAX, 0))?;
        let socket = check(libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3))?;
        let null = check(libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC))?;
        check(libc::dup2(null, 0))?;
        check(libc::dup2(2, 1))?;
        libc::close(null);
        UnixStream::from_raw_fd(socket)
    };
    let limit = |resource, value: u64| {
        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit reads the struct we pass.
        check(unsafe { libc::setrlimit(resource, &limit) })
    };
    limit(libc::RLIMIT_AS, args.memory_limit_mb.saturating_mul(1024 * 1024))?;
    limit(libc::RLIMIT_CPU, args.cpu_limit_secs)?;
    limit(libc::RLIMIT_NOFILE, args.open_files)?;
    // A crashing module must not leave core files of the worker's memory (its job's parameters) around.
    limit(libc::RLIMIT_CORE, 0)?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
    }
    Ok(socket)
}

/// What the module's calls and the reader thread share.
struct Link {
    writer: Mutex<UnixStream>,
    /// Calls waiting for their answer, by id.
    waiting: Mutex<HashMap<u64, mpsc::Sender<Vec<WireResult>>>>,
    next_id: AtomicU64,
    cancelled: AtomicBool,
}

impl Link {
    fn send(&self, message: &FromWorker) -> Result<(), ProtocolError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        write_message(&mut *writer, message)
    }
}

fn serve(socket: UnixStream) -> Result<(), ProtocolError> {
    let mut reader = socket.try_clone()?;
    let link = Arc::new(Link {
        writer: Mutex::new(socket),
        waiting: Mutex::default(),
        next_id: AtomicU64::new(1),
        cancelled: AtomicBool::new(false),
    });
    link.send(&FromWorker::Hello { protocol: PROTOCOL_VERSION })?;

    let ToWorker::Load = decode(&read_frame(&mut reader)?)? else {
        return Err(unexpected("the first message must be Load"));
    };
    let library = read_frame(&mut reader)?;
    let module = match load(&library) {
        Ok((module, metadata)) => {
            link.send(&FromWorker::Loaded { metadata: (&metadata).into() })?;
            module
        }
        Err(reason) => {
            link.send(&FromWorker::LoadFailed { reason })?;
            return Ok(());
        }
    };
    drop(library);

    let (runs, next_run) = mpsc::channel();
    let reading = link.clone();
    std::thread::Builder::new().name("protocol".into()).spawn(move || read_loop(reader, &reading, runs))?;
    while let Ok((init, backend)) = next_run.recv() {
        link.cancelled.store(false, Ordering::SeqCst);
        let remote = Remote { link: &link, backend };
        let outcome = run(module, init, &remote);
        link.send(&FromWorker::Finished { outcome, cpu_ms: cpu_ms() })?;
    }
    Ok(())
}

/// Loads the library from an anonymous in-memory file and reads its metadata. The server checked the ELF file
/// before sending it; abi_stable checks the interface version and the layout of every type here.
fn load(library: &[u8]) -> Result<(ModuleLibRef, omserver_plugin_api::Metadata), String> {
    // SAFETY: memfd_create takes a C string; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"omserver-module".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("cannot create the in-memory library file: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else. Kept open: the path below must stay valid.
    let mut memfd = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    memfd.write_all(library).map_err(|e| format!("cannot write the in-memory library file: {e}"))?;
    let path = format!("/proc/self/fd/{fd}");
    let lib = lib_header_from_path(path.as_ref())
        .and_then(|header| header.init_root_module::<ModuleLibRef>())
        .map_err(|e| format!("not a compatible OMServer module: {}", one_line(&e.to_string())))?;
    let metadata =
        lib.metadata()().into_result().map_err(|e| format!("the module's metadata call failed: {}", e.as_str()))?;
    Ok((lib, metadata))
}

/// abi_stable's errors span many lines (a layout mismatch, dozens): the listing wants them on one, and short.
fn one_line(text: &str) -> String {
    const MAX: usize = 400;
    let joined = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

fn run(module: ModuleLibRef, init: InitRequest, remote: &Remote<'_>) -> Result<Vec<WireResult>, String> {
    let mut task = match module.initialise()(init) {
        RResult::ROk(task) => task,
        RResult::RErr(message) => return Err(format!("initialise failed: {message}")),
    };
    let backend = Backend_TO::from_ptr(remote, TD_Opaque);
    match task.run(backend) {
        RResult::ROk(results) => Ok(results.into_iter().map(WireResult::from).collect()),
        RResult::RErr(message) => Err(message.into_string()),
    }
}

/// Reads the server's messages for as long as the socket is open. The server closing it ends the process at once,
/// whatever the module is doing: that is how a retired or orphaned worker goes away.
fn read_loop(mut reader: UnixStream, link: &Link, runs: mpsc::Sender<(InitRequest, String)>) {
    loop {
        let message = read_frame(&mut reader).and_then(|frame| decode::<ToWorker>(&frame));
        match message {
            Ok(ToWorker::Run { init, backend }) => {
                if runs.send((init.into(), backend)).is_err() {
                    break;
                }
            }
            Ok(ToWorker::Answer { id, results }) => {
                let waiting = link.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(caller) = waiting {
                    let _ = caller.send(results);
                }
            }
            Ok(ToWorker::Cancel) => link.cancelled.store(true, Ordering::SeqCst),
            Ok(ToWorker::Load) => {
                complain(format_args!("protocol error: a second Load"));
                break;
            }
            Err(ProtocolError::Closed) => break,
            Err(err) => {
                complain(format_args!("protocol error: {err}"));
                break;
            }
        }
    }
    // SAFETY: _exit ends the process without running the module's destructors, which may be what is broken.
    unsafe { libc::_exit(0) }
}

/// Says what went wrong on stderr, if anyone still reads it. Not `eprintln!`, which panics when the write fails:
/// a server that was killed leaves stderr a broken pipe, and a panic here would end this thread before the
/// `_exit`, leaving the module waiting for an answer for ever.
fn complain(what: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "omserver worker: {what}");
}

fn unexpected(what: &str) -> ProtocolError {
    ProtocolError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()))
}

/// User plus system CPU time of this process, for the pool's retirement rule.
fn cpu_ms() -> u64 {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let ms = |t: libc::timeval| (t.tv_sec as u64).saturating_mul(1000) + (t.tv_usec as u64) / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// The backend as the module sees it in a worker: every call goes to the server and blocks for the answer.
/// Called from module code across the FFI line: must not panic.
struct Remote<'a> {
    link: &'a Link,
    backend: String,
}

impl Remote<'_> {
    fn call(&self, hosts: &[Target], call: Call) -> RVec<HostResult> {
        let id = self.link.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, wait) = mpsc::channel();
        self.link.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, answer);
        let sent = self.link.send(&FromWorker::Call { id, call });
        let results = match sent {
            Ok(()) => wait.recv().ok(),
            Err(_) => None,
        };
        match results {
            Some(results) => results.into_iter().map(HostResult::from).collect(),
            None => hosts.iter().map(|h| HostResult::failed(&h.name, "the server went away")).collect(),
        }
    }
}

impl Backend for Remote<'_> {
    fn name(&self) -> RString {
        self.backend.as_str().into()
    }

    fn run(&self, hosts: RSlice<'_, Target>, argv: RSlice<'_, RString>) -> RVec<HostResult> {
        let call = Call::Run {
            hosts: hosts.iter().map(WireTarget::from).collect(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
        };
        self.call(hosts.as_slice(), call)
    }

    fn copy_file(&self, hosts: RSlice<'_, Target>, source: RStr<'_>, dest: RStr<'_>, mode: u32) -> RVec<HostResult> {
        let call = Call::Copy {
            hosts: hosts.iter().map(WireTarget::from).collect(),
            source: source.to_string(),
            dest: dest.to_string(),
            mode,
        };
        self.call(hosts.as_slice(), call)
    }

    fn is_cancelled(&self) -> bool {
        self.link.cancelled.load(Ordering::SeqCst)
    }
}
