//! Running one local process with a timeout and capped output; shared by the backends that spawn programs
//! (local, ansible).

use std::{
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use abi_stable::std_types::ROption;
use omserver_plugin_api::HostStatus;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, ChildStdout, Command},
    task::JoinHandle,
};

use super::output::Capped;

/// What one process did.
#[derive(Debug)]
pub struct Finished {
    pub status: HostStatus,
    pub rc: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

impl Finished {
    pub fn into_result(self, host: &str) -> omserver_plugin_api::HostResult {
        omserver_plugin_api::HostResult {
            host: host.into(),
            status: self.status,
            rc: self.rc.map_or(ROption::RNone, ROption::RSome),
            stdout: self.stdout.into(),
            stderr: self.stderr.into(),
            duration_ms: super::millis(self.duration),
        }
    }
}

/// Runs `argv` (no shell) with stdin closed. The process gets its own process group, and the whole group is killed
/// on timeout or when the future is dropped (a cancelled job), so no grandchild outlives the job.
pub async fn run(argv: &[String], timeout: Duration, output_limit: usize) -> Finished {
    let started = Instant::now();
    let failed = |message: String| Finished {
        status: HostStatus::Failed,
        rc: None,
        stdout: String::new(),
        stderr: message,
        duration: started.elapsed(),
    };
    let Some((program, args)) = argv.split_first() else {
        return failed("empty command".to_owned());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return failed(format!("cannot start {program}: {err}")),
    };
    let guard = GroupGuard(child.id());
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return failed("no pipes to the child process".to_owned());
    };
    let work = async {
        let (stdout, stderr, status) =
            tokio::join!(read_capped(&mut out, output_limit), read_capped(&mut err, output_limit), child.wait());
        (stdout, stderr, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok((stdout, stderr, Ok(status))) => {
            guard.disarm();
            let rc = status.code();
            Finished {
                status: if status.success() { HostStatus::Ok } else { HostStatus::Failed },
                rc,
                stdout,
                stderr: match rc {
                    Some(_) => stderr,
                    None => format!("{stderr}killed by a signal ({status})"),
                },
                duration: started.elapsed(),
            }
        }
        Ok((_, _, Err(e))) => failed(format!("waiting for {program}: {e}")),
        Err(_) => failed(format!("timed out after {timeout:?}")),
    }
    // `guard` kills the process group here unless the process was reaped normally.
}

/// A program started from a prepared [`Command`] whose stdout is read line by line while it runs (ansible prints
/// one line per host as each finishes). Like [`run`], it runs in its own process group, and dropping it kills the
/// whole group.
pub struct Streaming {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: JoinHandle<String>,
    guard: GroupGuard,
}

impl Streaming {
    /// Starts `command` with stdin closed and stdout/stderr piped; stderr is collected in the background, capped
    /// at `stderr_limit` bytes.
    pub fn spawn(mut command: Command, stderr_limit: usize) -> std::io::Result<Streaming> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
        let mut child = command.spawn()?;
        let guard = GroupGuard(child.id());
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(std::io::Error::other("no pipes to the child process"));
        };
        let stderr = tokio::spawn(async move { read_capped(&mut stderr, stderr_limit).await });
        Ok(Streaming { child, stdout: BufReader::new(stdout), stderr, guard })
    }

    /// The next line of stdout without its newline, keeping at most `max` bytes of it (the rest of an over-long
    /// line is skipped); `None` at the end of the output.
    pub async fn next_line(&mut self, max: usize) -> std::io::Result<Option<Vec<u8>>> {
        read_line_bounded(&mut self.stdout, max).await
    }

    /// Waits for the program to exit (after its stdout ended) and returns its status and capped stderr.
    pub async fn finish(mut self) -> (std::io::Result<ExitStatus>, String) {
        let status = self.child.wait().await;
        if status.is_ok() {
            // The leader was reaped: its id may be reused, so the group must not be signalled any more.
            self.guard.0 = None;
        }
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // Before the fields drop: `child` would kill only the leader, and its descendants would be orphaned (and
        // so no longer found as descendants) before `guard` looked for them.
        if let Some(pid) = self.guard.0.take().and_then(|p| i32::try_from(p).ok()) {
            kill_tree(pid);
        }
        // A stray holder of the stderr pipe must not keep the reader alive.
        self.stderr.abort();
    }
}

async fn read_line_bounded<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut read_any = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read_any.then_some(line));
        }
        read_any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        let room = max.saturating_sub(line.len()).min(chunk.len());
        line.extend_from_slice(&chunk[..room]);
        let used = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(line));
        }
    }
}

/// Kills a process group when dropped, unless disarmed after the leader was reaped (its id may then be reused).
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            kill_tree(pid);
        }
    }
}

/// Kills the process group of `leader` and every descendant of it, also those that left the group: ansible's
/// workers call `setsid()`, so killing the group alone would leave them and their ssh clients running.
///
/// Descendants are found through their parent links in /proc and stopped first (a stopped process cannot fork or
/// exit and so keeps its children attached), until a scan finds nothing new; then all are killed. Only processes
/// below our unreaped child are ever signalled, so a reused pid elsewhere is never hit.
pub(crate) fn kill_tree(leader: i32) {
    let signal = |pid: i32, sig: i32| {
        // SAFETY: kill/killpg only send a signal.
        unsafe {
            libc::kill(pid, sig);
        }
    };
    // SAFETY: as above; the group was created for this child and the child was not reaped yet.
    unsafe {
        libc::killpg(leader, libc::SIGSTOP);
    }
    let mut stopped: std::collections::HashSet<i32> = std::collections::HashSet::new();
    for _ in 0..20 {
        let new: Vec<i32> = descendants(leader).into_iter().filter(|p| !stopped.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            signal(pid, libc::SIGSTOP);
            stopped.insert(pid);
        }
    }
    for &pid in &stopped {
        signal(pid, libc::SIGKILL);
    }
    // SAFETY: as above.
    unsafe {
        libc::killpg(leader, libc::SIGKILL);
    }
}

/// Every process below `root`, from the parent pid in each /proc/<pid>/stat (empty where there is no /proc).
fn descendants(root: i32) -> Vec<i32> {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name in parentheses may hold spaces; the fields after it are state, ppid, …
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// Reads a stream to its end, keeping the first `limit` bytes and counting the rest, so a chatty command can
/// neither fill the server's memory nor block on a full pipe.
async fn read_capped<R: AsyncReadExt + Unpin>(reader: &mut R, limit: usize) -> String {
    let mut capped = Capped::new(limit);
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => capped.push(&buf[..n]),
        }
    }
    capped.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_code_and_output() {
        let done = run(&argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(5), 1024).await;
        assert_eq!((done.status, done.rc), (HostStatus::Failed, Some(3)));
        assert_eq!((done.stdout.as_str(), done.stderr.as_str()), ("out\n", "err\n"));
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let done = run(&argv(&["echo", "$(id)", ";", "*"]), Duration::from_secs(5), 1024).await;
        assert_eq!(done.stdout, "$(id) ; *\n");
    }

    #[tokio::test]
    async fn output_is_capped() {
        let done = run(&argv(&["head", "-c", "100000", "/dev/zero"]), Duration::from_secs(5), 1000).await;
        assert_eq!(done.status, HostStatus::Ok);
        assert!(done.stdout.ends_with("[output cut: 99000 more bytes]"), "{}", &done.stdout[1000..]);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let started = Instant::now();
        let done = run(&argv(&["sh", "-c", "sleep 30 & sleep 30"]), Duration::from_millis(300), 1024).await;
        assert!(started.elapsed() < Duration::from_secs(5), "the pipes were held open by a grandchild");
        assert_eq!(done.stderr, "timed out after 300ms");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_failed_result() {
        let done = run(&argv(&["/nonexistent/program"]), Duration::from_secs(5), 1024).await;
        assert_eq!(done.status, HostStatus::Failed);
        assert!(done.stderr.starts_with("cannot start /nonexistent/program"), "{}", done.stderr);
    }

    #[tokio::test]
    async fn streaming_reads_lines_as_they_come_and_bounds_them() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo 0123456789abcdef; printf tail; echo oops >&2; exit 4"]);
        let mut child = Streaming::spawn(command, 1024).unwrap();
        assert_eq!(child.next_line(100).await.unwrap().unwrap(), b"one");
        assert_eq!(child.next_line(10).await.unwrap().unwrap(), b"0123456789", "cut at 10 bytes");
        assert_eq!(child.next_line(100).await.unwrap().unwrap(), b"tail", "a last line without newline");
        assert!(child.next_line(100).await.unwrap().is_none());
        let (status, stderr) = child.finish().await;
        assert_eq!((status.unwrap().code(), stderr.as_str()), (Some(4), "oops\n"));
    }

    #[tokio::test]
    async fn dropping_a_streaming_child_kills_descendants_that_left_its_group() {
        let marker = format!("sleep 8{}", std::process::id() % 1000);
        let mut command = Command::new("sh");
        // A new session, as ansible's workers make for themselves (`-w`: setsid stays the parent, no daemon).
        command.args(["-c", &format!("setsid -w {marker} & {marker}")]);
        let child = Streaming::spawn(command, 1024).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(child);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
        assert!(left.stdout.is_empty(), "left behind: {}", String::from_utf8_lossy(&left.stdout));
    }

    #[tokio::test]
    async fn dropping_a_streaming_child_kills_its_group() {
        let marker = format!("sleep 7{}", std::process::id() % 1000);
        let mut command = Command::new("sh");
        command.args(["-c", &format!("{marker} & {marker}; echo never")]);
        let child = Streaming::spawn(command, 1024).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(child);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
        assert!(left.stdout.is_empty(), "left behind: {}", String::from_utf8_lossy(&left.stdout));
    }
}
