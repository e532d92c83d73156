//! The local spool: every event is written here first, at the prompt, and leaves only when the server has
//! acknowledged it.
//!
//! One spool per real uid, in a directory shared like /tmp (see the `files` module):
//!
//! | file | content |
//! | --- | --- |
//! | `<uid>.spool` | one JSON [`Event`] per line, oldest first (O_APPEND) |
//! | `<uid>.state` | [`State`] (JSON, overwritten in place): stream id, next seq, counters, gaps, dedup, last error |
//! | `<uid>.lock` | flock'd around every change of the two files above (never held during network I/O) |
//! | `<uid>.flush.lock` | held by the one flusher of this uid |
//!
//! **Architecture Invariant:** a sequence number is reserved in the state *before* its line is appended, so a crash
//! between the two can only skip a number, never reuse one (a reused `(stream, seq)` would be dropped by the server
//! as a duplicate: a silent loss). Every number that does not make it into the spool is recorded as a gap.
//!
//! **Architecture Invariant:** only the flusher holding `<uid>.flush.lock` removes lines, and it removes exactly
//! the lines the server acknowledged, which are a prefix of the file; appenders only append. That lets the flusher
//! copy the surviving tail to a new file outside the spool lock and take the lock only for the few lines appended
//! meanwhile and the rename. Before removing, it checks the file still starts with the bytes it sent; if not (the
//! file was replaced behind its back) it removes by `(stream, seq)` instead.
//!
//! Files are private (0600) and opened defensively (the `files` module). Nothing here fsyncs at the prompt: the events
//! survive any crash of a process, not a power cut in the seconds before write-back (see the crate docs).

pub(crate) mod files;
pub mod state;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::event::{Capture, Event, Gap};
use files::Access;
pub use files::Lock;
pub use state::State;

/// How long a prompt waits for the spool lock before giving up with [`Error::SpoolBusy`].
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The spool of one uid (or the watcher's, `execve.*`).
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// The file names' stem: the uid, or `execve` for `omaudit-agent watch`.
    stem: String,
    max_events: u64,
}

/// Events that will never be spooled, counted: a gap of `count` sequence numbers with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// How many events (at least 1).
    pub count: u64,
    /// Why, as the server shows it.
    pub reason: String,
}

/// What [`Spool::record_many`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordedMany {
    /// Events appended.
    pub appended: u64,
    /// Events counted lost because the spool was full.
    pub full: u64,
    /// Sequence numbers reserved for the given losses.
    pub lost: u64,
}

/// What [`Spool::record`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Spooled with this sequence number.
    Appended(u64),
    /// The same history line as last time on this terminal (an empty Enter): not recorded again.
    Duplicate,
    /// The spool is full: this sequence number is counted as lost and will be reported as a gap.
    Lost(u64),
}

/// The result of recording one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// What happened to the event.
    pub outcome: Outcome,
    /// Whether events or gaps now wait for delivery.
    pub pending: bool,
}

/// A run of spool lines read for sending, with the gaps to report alongside.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Events in spool order.
    pub events: Vec<Event>,
    /// Gaps not yet acknowledged (minus those the caller asked to skip).
    pub gaps: Vec<Gap>,
    /// Lines in the run that are not events (damaged by a crash or a full disk); removed with the batch.
    pub corrupt: Vec<String>,
    /// Offset in the spool where the run starts.
    start: u64,
    /// Bytes of the spool the run covers.
    consumed: u64,
    /// Those bytes: removal checks the spool still starts with them (an inode number alone can be reused).
    prefix: Vec<u8>,
}

impl Batch {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.gaps.is_empty() && self.consumed == 0
    }

    /// The same events, without the gaps (when the gaps were not delivered with them).
    pub fn without_gaps(&self) -> Batch {
        Batch { gaps: Vec::new(), ..self.clone() }
    }

    /// Where the next run starts.
    pub fn end(&self) -> u64 {
        self.start + self.consumed
    }

    /// Appends the run read from [`Batch::end`] on, so several acknowledged batches are removed with one rewrite.
    pub fn extend(&mut self, next: Batch) {
        debug_assert_eq!(next.start, self.end(), "batches must be contiguous");
        self.events.extend(next.events);
        self.gaps.extend(next.gaps);
        self.corrupt.extend(next.corrupt);
        self.consumed += next.consumed;
        self.prefix.extend(next.prefix);
    }
}

/// What `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The spool file.
    pub path: PathBuf,
    /// Events in the spool file, counted.
    pub spooled: u64,
    /// The persisted state.
    pub state: State,
}

impl Spool {
    /// The spool of `uid` in `dir`, creating the directory when missing.
    pub fn open(dir: &Path, uid: u32, max_events: u64) -> Result<Spool> {
        files::ensure_dir(dir)?;
        Ok(Spool { dir: dir.to_owned(), stem: uid.to_string(), max_events })
    }

    /// The kernel watcher's spool, `<dir>/execve.spool`: one writer (the watcher), apart from every prompt's.
    pub fn open_watch(dir: &Path, max_events: u64) -> Result<Spool> {
        files::ensure_dir(dir)?;
        Ok(Spool { dir: dir.to_owned(), stem: "execve".to_owned(), max_events })
    }

    /// `<dir>/<uid>.spool`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.spool", self.stem))
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(format!("{}.state", self.stem))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }

    fn flush_lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.flush.lock", self.stem))
    }

    /// Records one event: de-duplicates, assigns `(stream, seq)`, appends or counts it lost. Called at the prompt.
    pub fn record(&self, capture: Capture) -> Result<Recorded> {
        let _lock = files::lock(&self.lock_path(), true, LOCK_WAIT)?;
        let mut state = self.load_state()?;
        if state.check_and_remember(&capture.identity.tty, capture.line.history_id, &capture.line.command) {
            return Ok(Recorded { outcome: Outcome::Duplicate, pending: state.pending() });
        }
        let seq = state.take_seq();
        if state.spooled >= self.max_events {
            state.add_loss(seq, "spool full");
            self.save_state(&state)?;
            return Ok(Recorded { outcome: Outcome::Lost(seq), pending: true });
        }
        state.spooled += 1;
        // Reserve the number first (see the module's invariant).
        self.save_state(&state)?;
        let event = capture.into_event(&state.stream, seq);
        if let Err(err) = self.append(&event) {
            state.spooled -= 1;
            state.add_loss(seq, &format!("spool write failed: {err}"));
            // Best effort: the disk that refused the line may refuse this too; the caller reports `err` anyway.
            let _ = self.save_state(&state);
            return Err(err);
        }
        Ok(Recorded { outcome: Outcome::Appended(seq), pending: true })
    }

    /// Records many events and losses under one lock, one state write and one append: the watcher's path, where
    /// thousands of execs a second must not cost a lock and a state rewrite each. `build` makes each item's event
    /// at its `(stream, seq)`. Losses are given sequence numbers too, and reported as gaps.
    pub fn record_many<T>(
        &self,
        items: Vec<T>,
        losses: &[Loss],
        mut build: impl FnMut(T, &str, u64) -> Event,
    ) -> Result<RecordedMany> {
        let mut done = RecordedMany::default();
        if items.is_empty() && losses.is_empty() {
            return Ok(done);
        }
        let _lock = files::lock(&self.lock_path(), true, LOCK_WAIT)?;
        let mut state = self.load_state()?;
        for loss in losses {
            let count = loss.count.max(1);
            let from_seq = state.next_seq;
            state.next_seq += count;
            state.lost += count;
            done.lost += count;
            let stream = state.stream.clone();
            state.add_gap(Gap { stream, from_seq, to_seq: from_seq + count - 1, reason: loss.reason.clone() });
        }
        let path = self.path();
        let mut lines = Vec::new();
        let mut seqs = Vec::new();
        for item in items {
            let seq = state.take_seq();
            if state.spooled >= self.max_events {
                state.add_loss(seq, "spool full");
                done.full += 1;
                continue;
            }
            state.spooled += 1;
            seqs.push(seq);
            let event = build(item, &state.stream, seq);
            serde_json::to_writer(&mut lines, &event).map_err(|e| Error::io("encode event for", &path, e.into()))?;
            lines.push(b'\n');
        }
        // Reserve the numbers first (see the module's invariant).
        self.save_state(&state)?;
        if !lines.is_empty() {
            if let Err(err) = self.append_bytes(lines) {
                state.spooled -= seqs.len() as u64;
                for seq in seqs {
                    state.add_loss(seq, &format!("spool write failed: {err}"));
                }
                let _ = self.save_state(&state);
                return Err(err);
            }
        }
        done.appended = seqs.len() as u64;
        Ok(done)
    }

    fn append(&self, event: &Event) -> Result<()> {
        let path = self.path();
        let mut line = serde_json::to_vec(event).map_err(|e| Error::io("encode event for", &path, e.into()))?;
        line.push(b'\n');
        self.append_bytes(line)
    }

    /// Appends whole lines (ending in a newline).
    fn append_bytes(&self, mut line: Vec<u8>) -> Result<()> {
        let path = self.path();
        let mut file = open_existing(&path, Access::AppendCreate)?;
        let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        if len > 0 {
            // A crash or a full disk can leave a line without its newline: never glue a new line onto it.
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1).map_err(|e| Error::io("read", &path, e))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        if let Err(e) = file.write_all(&line) {
            // Take back a partial line so the next append starts clean.
            let _ = file.set_len(len);
            return Err(Error::io("append to", &path, e));
        }
        Ok(())
    }

    /// Reads up to `max_events` events (and about `max_bytes`, at least one event) from offset `start` of the
    /// spool (0, or the [`Batch::end`] of batches acknowledged but not yet removed), with the pending gaps not in
    /// `skip_gaps`.
    pub fn read_batch(&self, start: u64, skip_gaps: &[Gap], max_events: usize, max_bytes: u64) -> Result<Batch> {
        let _lock = files::lock(&self.lock_path(), false, LOCK_WAIT)?;
        let state = self.load_state()?;
        let gaps = state.gaps.into_iter().filter(|g| !skip_gaps.contains(g)).collect();
        let mut batch = Batch { gaps, start, ..Batch::default() };
        let path = self.path();
        let Some(mut file) = files::open_private(&path, Access::Read)? else {
            return Ok(batch);
        };
        // Past the end (the spool was replaced meanwhile): an empty run; removal then falls back to keys.
        file.seek(SeekFrom::Start(start)).map_err(|e| Error::io("seek", &path, e))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut bytes = 0u64;
        while batch.events.len() < max_events.max(1) && (batch.events.is_empty() || bytes < max_bytes) {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io("read", &path, e))? as u64;
            if n == 0 {
                break;
            }
            batch.consumed += n;
            batch.prefix.extend_from_slice(&buf);
            let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Event>(body) {
                Ok(event) => {
                    bytes += n;
                    batch.events.push(event);
                }
                Err(_) => batch.corrupt.push(String::from_utf8_lossy(body).into_owned()),
            }
        }
        Ok(batch)
    }

    /// Removes exactly the batch's lines from the spool (a run starting at offset 0; anything else, or a spool
    /// that no longer starts with those bytes, falls back to removal by `(stream, seq)`), forgets the batch's gaps,
    /// adds `new_gaps`, marks a successful delivery, and returns the events left. The caller holds the flush lock.
    pub fn remove(&self, batch: &Batch, new_gaps: Vec<Gap>) -> Result<u64> {
        let path = self.path();
        let mut prepared = None;
        if batch.consumed > 0 {
            // Phase 1, without the spool lock: copy what follows the batch as of now.
            prepared = self.copy_tail(&path, batch)?;
        }
        let _lock = files::lock(&self.lock_path(), true, LOCK_WAIT)?;
        let mut state = self.load_state()?;
        if batch.consumed > 0 {
            // Phase 2, under the lock: add the lines appended meanwhile, then swap the files.
            let remaining = match prepared {
                Some(tail) => self.finish_tail(&path, batch, tail)?,
                None => self.rewrite_without(&path, batch)?,
            };
            state.spooled = remaining;
        }
        state.acknowledge_gaps(&batch.gaps);
        for gap in new_gaps {
            state.add_gap(gap);
        }
        state.last_error = None;
        state.last_error_at = None;
        state.last_delivery_at = Some(now());
        self.save_state(&state)?;
        Ok(state.spooled)
    }

    /// Copies `[batch.consumed, len)` of the current spool to a temporary file. `None` if the spool no longer
    /// starts with the batch.
    fn copy_tail(&self, path: &Path, batch: &Batch) -> Result<Option<Tail>> {
        let Some(mut src) = files::open_private(path, Access::Read)? else { return Ok(None) };
        let meta = src.metadata().map_err(|e| Error::io("stat", path, e))?;
        if batch.start != 0 || !starts_with(&src, meta.len(), &batch.prefix, path)? {
            return Ok(None);
        }
        let (mut tmp, tmp_path) = files::create_temp(path)?;
        let tail = (|| -> Result<Tail> {
            let lines = copy_range(&mut src, batch.consumed, meta.len(), &mut tmp, path)?;
            tmp.sync_data().map_err(|e| Error::io("sync", &tmp_path, e))?;
            Ok(Tail {
                file: tmp,
                path: tmp_path.clone(),
                source_id: (meta.dev(), meta.ino()),
                copied_to: meta.len(),
                lines,
            })
        })();
        if tail.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        tail.map(Some)
    }

    fn finish_tail(&self, path: &Path, batch: &Batch, mut tail: Tail) -> Result<u64> {
        let result = (|| -> Result<Option<u64>> {
            let Some(mut src) = files::open_private(path, Access::Read)? else { return Ok(None) };
            let meta = src.metadata().map_err(|e| Error::io("stat", path, e))?;
            if (meta.dev(), meta.ino()) != tail.source_id
                || meta.len() < tail.copied_to
                || !starts_with(&src, meta.len(), &batch.prefix, path)?
            {
                return Ok(None);
            }
            // No fsync here, under the lock: these few lines were not synced in the old file either, and the
            // bulk copied before the lock was.
            let lines = tail.lines + copy_range(&mut src, tail.copied_to, meta.len(), &mut tail.file, path)?;
            std::fs::rename(&tail.path, path).map_err(|e| Error::io("rename", &tail.path, e))?;
            Ok(Some(lines))
        })();
        match result {
            Ok(Some(lines)) => Ok(lines),
            other => {
                let _ = std::fs::remove_file(&tail.path);
                match other {
                    Err(e) => Err(e),
                    // The spool was replaced or truncated behind our back: fall back to filtering by key.
                    _ => self.rewrite_without(path, batch),
                }
            }
        }
    }

    /// Slow path, under the lock: rewrites the spool without the batch's `(stream, seq)` keys.
    fn rewrite_without(&self, path: &Path, batch: &Batch) -> Result<u64> {
        let Some(src) = files::open_private(path, Access::Read)? else { return Ok(0) };
        let sent: std::collections::HashSet<(&str, u64)> =
            batch.events.iter().map(|e| (e.stream.as_str(), e.seq)).collect();
        let (mut tmp, tmp_path) = files::create_temp(path)?;
        let result = (|| -> Result<u64> {
            let mut kept = 0;
            for line in BufReader::new(src).split(b'\n') {
                let line = line.map_err(|e| Error::io("read", path, e))?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Ok(event) = serde_json::from_slice::<Event>(&line) {
                    if sent.contains(&(event.stream.as_str(), event.seq)) {
                        continue;
                    }
                }
                tmp.write_all(&line)
                    .and_then(|()| tmp.write_all(b"\n"))
                    .map_err(|e| Error::io("write", &tmp_path, e))?;
                kept += 1;
            }
            tmp.sync_data().map_err(|e| Error::io("sync", &tmp_path, e))?;
            std::fs::rename(&tmp_path, path).map_err(|e| Error::io("rename", &tmp_path, e))?;
            Ok(kept)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result
    }

    /// Records (or clears) the last delivery error; returns true when it changed.
    pub fn note_error(&self, error: Option<&str>) -> Result<bool> {
        let _lock = files::lock(&self.lock_path(), true, LOCK_WAIT)?;
        let mut state = self.load_state()?;
        if state.last_error.as_deref() == error {
            return Ok(false);
        }
        state.last_error = error.map(str::to_owned);
        state.last_error_at = error.map(|_| now());
        self.save_state(&state)?;
        Ok(true)
    }

    /// Whether anything waits for delivery: a non-empty spool file or unacknowledged gaps. Agrees with
    /// [`Batch::is_empty`] (the state's event counter could be off by one after a crash; the file is not).
    pub fn pending(&self) -> Result<bool> {
        let _lock = files::lock(&self.lock_path(), false, LOCK_WAIT)?;
        let path = self.path();
        let bytes = match files::open_private(&path, Access::Read)? {
            Some(file) => file.metadata().map_err(|e| Error::io("stat", &path, e))?.len(),
            None => 0,
        };
        Ok(bytes > 0 || !self.load_state()?.gaps.is_empty())
    }

    /// The state and the counted number of spooled events.
    pub fn status(&self) -> Result<Status> {
        let _lock = files::lock(&self.lock_path(), false, LOCK_WAIT)?;
        let state = self.load_state()?;
        let path = self.path();
        let spooled = match files::open_private(&path, Access::Read)? {
            Some(file) => count_lines(file, &path)?,
            None => 0,
        };
        Ok(Status { path, spooled, state })
    }

    /// Becomes this uid's flusher: `None` if another process is one already (`wait` = false) .
    pub fn flush_lock(&self, wait: bool) -> Result<Option<Lock>> {
        if wait {
            files::lock_blocking(&self.flush_lock_path()).map(Some)
        } else {
            files::try_lock(&self.flush_lock_path())
        }
    }

    /// Whether a flusher is running now.
    pub fn flusher_running(&self) -> Result<bool> {
        Ok(files::try_lock(&self.flush_lock_path())?.is_none())
    }

    /// Loads the state, or starts a new one (new stream) when there is none or it is unreadable. Call under the lock.
    fn load_state(&self) -> Result<State> {
        let path = self.state_path();
        let Some(mut file) = files::open_private(&path, Access::Read)? else {
            return self.fresh_state();
        };
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(|e| Error::io("read", &path, e))?;
        if text.iter().all(u8::is_ascii_whitespace) {
            return self.fresh_state();
        }
        // The first JSON value; bytes after it are the tail of an older, longer state (see `save_state`).
        match serde_json::Deserializer::from_slice(&text).into_iter::<State>().next() {
            Some(Ok(state)) => Ok(state),
            // Damaged (crash on a full disk): keep a copy for the admin, start a new stream. Events already in the
            // spool carry their own stream and still go out; only unsent gap reports can be lost, and the copy
            // keeps them.
            _ => {
                let _ = std::fs::rename(&path, self.dir.join(format!("{}.state.damaged", self.stem)));
                self.fresh_state()
            }
        }
    }

    fn fresh_state(&self) -> Result<State> {
        let mut state = State::new();
        let path = self.path();
        if let Some(file) = files::open_private(&path, Access::Read)? {
            state.spooled = count_lines(file, &path)?;
        }
        Ok(state)
    }

    /// Overwrites the state file in place: write from offset 0, then cut what is left of a longer old state.
    ///
    /// Not temp + rename: on ext4 a rename over an existing file forces write-back of the new file, measured
    /// here at 0.36 ms median and 5 ms p99 per prompt against 7 µs for this. A crash between the write and the cut
    /// leaves trailing bytes after a complete JSON value, which [`Spool::load_state`] ignores. Call under the lock.
    fn save_state(&self, state: &State) -> Result<()> {
        let path = self.state_path();
        let text = serde_json::to_vec(state).map_err(|e| Error::io("encode", &path, e.into()))?;
        let file = open_existing(&path, Access::ReadWriteCreate)?;
        file.write_all_at(&text, 0).map_err(|e| Error::io("write", &path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        if len > text.len() as u64 {
            file.set_len(text.len() as u64).map_err(|e| Error::io("truncate", &path, e))?;
        }
        Ok(())
    }
}

/// A temporary copy of the spool's tail being prepared.
struct Tail {
    file: File,
    path: PathBuf,
    /// `(dev, ino)` of the spool the bulk was copied from.
    source_id: (u64, u64),
    copied_to: u64,
    lines: u64,
}

/// Whether the file (of length `len`) begins with `prefix`.
fn starts_with(file: &File, len: u64, prefix: &[u8], path: &Path) -> Result<bool> {
    if len < prefix.len() as u64 {
        return Ok(false);
    }
    let mut current = vec![0u8; prefix.len()];
    file.read_exact_at(&mut current, 0).map_err(|e| Error::io("read", path, e))?;
    Ok(current == prefix)
}

/// Copies `[from, to)` of `src` to `dst`, returning how many newlines it copied.
fn copy_range(src: &mut File, from: u64, to: u64, dst: &mut File, path: &Path) -> Result<u64> {
    src.seek(SeekFrom::Start(from)).map_err(|e| Error::io("seek", path, e))?;
    let mut reader = src.take(to - from);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        dst.write_all(&buf[..n]).map_err(|e| Error::io("write", path, e))?;
    }
    Ok(lines)
}

/// Non-blank lines in a spool file.
fn count_lines(file: File, path: &Path) -> Result<u64> {
    let mut count = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| Error::io("read", path, e))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            count += 1;
        }
    }
    Ok(count)
}

fn open_existing(path: &Path, access: Access) -> Result<File> {
    files::open_private(path, access)?.ok_or_else(|| Error::io("open", path, io::Error::from(io::ErrorKind::NotFound)))
}

/// Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
