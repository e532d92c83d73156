//! Running one local process with a timeout and capped output; shared by the backends that spawn programs
//! (local, ansible).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use abi_stable::std_types::ROption;
use omserver_plugin_api::HostStatus;
use tokio::{io::AsyncReadExt, process::Command};

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
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
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
            // SAFETY: killpg only sends a signal; the group was created for this child and it was not reaped yet.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
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
}
