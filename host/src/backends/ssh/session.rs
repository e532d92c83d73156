//! One command on one channel: exec, optional stdin, then read the channel until it ends (stdout, stderr, exit
//! status or signal, close), capped and under the command timeout.
//!
//! Stopping a command that times out, or whose future is dropped (a cancelled job), takes two steps, because
//! sshd cannot always be asked to do it:
//! - a `signal KILL` channel request. sshd answers it with `killpg` of the session's process, but OpenSSH refuses
//!   it for root logins ("session signalling requires privilege separation": root sessions run in the monitor),
//!   and root is the usual login here;
//! - so every command line starts with `echo $$;` and we read the remote process id from the first line of stdout
//!   (it is not part of the output). sshd starts each command in a session of its own (`setsid`), and with
//!   `exec` (see `quote.rs`) that process is the program itself, so `kill -9 -- -PID` on a second channel of the
//!   same connection ends the program and all its children.
//!
//! Closing the channel alone would not do it: without a pty sshd leaves the process running.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use russh::{client::Msg, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};

use super::pool::{Connection, Lease};
use crate::backends::output::Capped;

/// What a command did.
#[derive(Debug)]
pub struct Finished {
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No channel could be opened: nothing was sent, so trying again on a fresh connection is safe.
    #[error("could not open an SSH channel: {0}")]
    Open(String),
    #[error("sshd refused to run the command")]
    Refused,
    #[error("the SSH connection was lost while the command ran: {0}")]
    Lost(String),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Runs `command` on a new channel of `connection`. `open_timeout` bounds getting the channel (a pooled connection
/// that cannot open one within it is considered broken); `timeout` bounds the command itself.
pub async fn run(
    connection: &Arc<Connection>,
    command: &str,
    stdin: Option<&[u8]>,
    open_timeout: Duration,
    timeout: Duration,
    output_limit: usize,
) -> Result<Finished, CommandError> {
    let open = async {
        let lease = connection.lease().await.ok_or_else(|| CommandError::Open("connection closed".into()))?;
        let channel =
            connection.handle().channel_open_session().await.map_err(|e| CommandError::Open(e.to_string()))?;
        Ok::<_, CommandError>((lease, channel))
    };
    let (lease, channel) = tokio::time::timeout(open_timeout, open)
        .await
        .map_err(|_| CommandError::Open(format!("no channel within {}s", open_timeout.as_secs_f32())))??;
    let (reader, writer) = channel.split();
    let writer = Arc::new(writer);
    let remote_pid = Arc::new(AtomicU32::new(PID_UNKNOWN));
    let mut stop = StopOnDrop {
        writer: Some(writer.clone()),
        reader: Some(reader),
        lease: Some(lease),
        remote_pid: remote_pid.clone(),
    };
    let reader = &mut stop.reader;
    let work = async {
        let reader = reader.as_mut().ok_or_else(|| CommandError::Lost("no channel reader".to_owned()))?;
        let line = format!("echo $$; {command}");
        writer.exec(true, line.as_bytes()).await.map_err(|e| CommandError::Lost(e.to_string()))?;
        // The data goes after exec, on the channel's stdin; EOF right away when there is none (like `ssh -n`), so a
        // program that reads stdin does not wait forever.
        let feed = async {
            if let Some(data) = stdin {
                writer.data(data).await?;
            }
            writer.eof().await
        };
        tokio::pin!(feed);
        let mut fed = false;
        let mut pid_line = PidLine::default();
        let mut stdout = Capped::new(output_limit);
        let mut stderr = Capped::new(output_limit);
        let (mut exit_status, mut exit_signal) = (None, None);
        loop {
            tokio::select! {
                result = &mut feed, if !fed => {
                    fed = true;
                    // The program may exit without reading its input; its exit status tells what happened.
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "ssh: writing the command's stdin");
                    }
                }
                message = reader.wait() => match message {
                    Some(ChannelMsg::Data { data }) => {
                        let rest = pid_line.feed(&data, &mut stdout);
                        match pid_line.pid.take() {
                            Some(pid) => remote_pid.store(pid, Ordering::SeqCst),
                            None => {
                                let _ = remote_pid.compare_exchange(
                                    PID_UNKNOWN, PID_NONE, Ordering::SeqCst, Ordering::SeqCst,
                                );
                            }
                        }
                        stdout.push(rest);
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => stderr.push(&data),
                    Some(ChannelMsg::ExitStatus { exit_status: code }) => exit_status = Some(code),
                    Some(ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, .. }) => {
                        let core = if core_dumped { " (core dumped)" } else { "" };
                        exit_signal = Some(format!("{signal_name:?}{core} {error_message}").trim_end().to_owned());
                    }
                    Some(ChannelMsg::Failure) => return Err(CommandError::Refused),
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {} // Success (the exec reply), Eof, window adjustments
                }
            }
        }
        if exit_status.is_none() && exit_signal.is_none() {
            return Err(CommandError::Lost("the channel closed without an exit status".to_owned()));
        }
        Ok(Finished { exit_status, exit_signal, stdout: stdout.finish(), stderr: stderr.finish() })
    };
    let result = tokio::time::timeout(timeout, work).await;
    match result {
        Ok(Ok(finished)) => {
            // The channel has ended on its own: nothing to stop.
            stop.disarm();
            Ok(finished)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(CommandError::TimedOut(timeout)),
    }
    // `stop` signals and closes the channel here unless disarmed.
}

/// `remote_pid` before any stdout arrived.
const PID_UNKNOWN: u32 = 0;
/// `remote_pid` when stdout began with something else than a process id (a chatty login shell).
const PID_NONE: u32 = 1;

/// Kills the remote command and closes its channel when dropped, unless it ended on its own. Drop cannot await,
/// so the requests are sent from a spawned task, which keeps the connection leased until they are out.
struct StopOnDrop {
    writer: Option<Arc<ChannelWriteHalf<Msg>>>,
    /// Kept so that a command cancelled before its pid line arrived can still be found.
    reader: Option<ChannelReadHalf>,
    lease: Option<Lease>,
    /// The remote process id once the first line of stdout said it, else [`PID_UNKNOWN`] or [`PID_NONE`].
    remote_pid: Arc<AtomicU32>,
}

impl StopOnDrop {
    fn disarm(&mut self) {
        self.writer = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else { return };
        let Some(lease) = self.lease.take() else { return };
        let mut pid = self.remote_pid.load(Ordering::SeqCst);
        let reader = self.reader.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = writer.signal(Sig::KILL).await;
            if let (PID_UNKNOWN, Some(mut reader)) = (pid, reader) {
                pid = pid_from(&mut reader).await;
            }
            // Never 0 or 1: `kill -- -1` would mean every process the user may signal.
            if pid > PID_NONE {
                kill_group(lease.connection(), pid).await;
            }
            let _ = writer.close().await;
            drop(lease);
        });
    }
}

/// Reads the pid line of a command cancelled before it arrived (bounded: the command may be stuck).
async fn pid_from(reader: &mut ChannelReadHalf) -> u32 {
    let mut line = PidLine::default();
    let mut ignored = Capped::new(0);
    let read = async {
        while let Some(message) = reader.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    line.feed(&data, &mut ignored);
                    if line.done {
                        return line.pid.unwrap_or(PID_NONE);
                    }
                }
                ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } | ChannelMsg::Close => break,
                _ => {}
            }
        }
        PID_NONE
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.unwrap_or(PID_NONE)
}

/// Runs `kill -9 -- -PID` on a new channel of the same connection and waits (bounded) for it to finish.
async fn kill_group(connection: &Connection, pid: u32) {
    let work = async {
        let mut channel = connection.handle().channel_open_session().await?;
        channel.exec(true, format!("kill -9 -- -{pid} 2>/dev/null")).await?;
        channel.eof().await?;
        while let Some(message) = channel.wait().await {
            if matches!(message, ChannelMsg::Close) {
                break;
            }
        }
        Ok::<_, russh::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(())) => tracing::debug!(pid, "ssh: killed the remote process group"),
        Ok(Err(e)) => tracing::warn!(pid, error = %e, "ssh: could not kill the remote process group"),
        Err(_) => tracing::warn!(pid, "ssh: killing the remote process group did not finish within 10s"),
    }
}

/// Splits the first stdout line (`echo $$`) from the command's own output.
#[derive(Default)]
struct PidLine {
    buffer: Vec<u8>,
    done: bool,
    pid: Option<u32>,
}

impl PidLine {
    /// Takes what belongs to the pid line from `chunk` and returns the rest, which is output.
    fn feed<'a>(&mut self, chunk: &'a [u8], stdout: &mut Capped) -> &'a [u8] {
        if self.done {
            return chunk;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(end) => {
                self.buffer.extend_from_slice(&chunk[..end]);
                self.done = true;
                self.pid = std::str::from_utf8(&self.buffer).ok().and_then(|t| t.trim().parse().ok());
                if self.pid.is_none() {
                    // Not our line after all (a login shell that prints something first): keep it as output.
                    stdout.push(&self.buffer);
                    stdout.push(b"\n");
                }
                &chunk[end + 1..]
            }
            None => {
                self.buffer.extend_from_slice(chunk);
                if self.buffer.len() > 20 {
                    self.done = true;
                    stdout.push(&self.buffer);
                }
                &[]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_line_is_split_from_the_output_across_chunks() {
        let mut line = PidLine::default();
        let mut out = Capped::new(100);
        for chunk in [&b"12"[..], b"34\nhel", b"lo\n"] {
            let rest = line.feed(chunk, &mut out);
            out.push(rest);
        }
        assert_eq!(line.pid, Some(1234));
        assert_eq!(out.finish(), "hello\n");
    }

    #[test]
    fn a_line_that_is_no_pid_stays_output() {
        let mut line = PidLine::default();
        let mut out = Capped::new(100);
        let rest = line.feed(b"banner\nrest", &mut out);
        out.push(rest);
        assert_eq!(line.pid, None);
        assert_eq!(out.finish(), "banner\nrest");
    }
}
