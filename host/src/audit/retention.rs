//! Retention: rows received before a cutoff leave the database for archive files ([`super::archive`]), and
//! can come back.
//!
//! A pass takes each host in turn and walks its chain from its archive line: the rows received before the cutoff
//! go, a UTC day at a time, into one archive file, which is written, flushed to disk and renamed into place; only
//! then are those rows deleted, [`DELETE_BATCH`] at a time, each batch in one transaction that also moves the
//! host's archive line (with its MAC). A crash at any point loses nothing: a file not yet renamed is rewritten;
//! rows already in a renamed file but still in the database are deleted by the next pass, which starts by
//! finishing that file. Each batch holds the write lock for milliseconds, files are compressed off the runtime's
//! threads, and the pass rests nine times as long as each read and delete took, so ingest keeps its speed
//! (measured in `tests/audit_archive.rs`).
//!
//! Only one process moves rows at a time: a pass or a restore holds an exclusive lock on `<archive>/.lock`.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{
    archive::{self, ArchiveError, FileReader, FileWriter},
    chain::{self, ChainKey, GENESIS},
};
use crate::store::{now_ms, ArchivedUpTo, AuditRow, Store, StoreError};

/// Rows deleted per transaction (each also leaves SQLite's command index). Fewer, longer transactions cost ingest
/// less than many short ones: each commit flushes the WAL, and the writer waiting for the lock retries in steps. At
/// a million events, ingest on SQLite during a pass ran at 65 % of its speed with 100, 74 % with 500, 95 % with
/// 2 000 (BENCHMARKS.md, "Audit search").
const DELETE_BATCH: usize = 2000;
/// Rows put back per transaction (24 parameters each, under every dialect's limit).
const RESTORE_BATCH: usize = 500;
/// Rows read from the database at a time while writing a file: first [`FIRST_PAGE`], doubling up to [`PAGE`].
const PAGE: i64 = 5000;
const FIRST_PAGE: i64 = 500;
/// After each page read and each batch deleted, the pass rests this many times as long as it took: at most a
/// tenth of the database's time, so that ingest keeps its speed. (Writing files is not counted: it waits on the
/// disk, on a blocking thread.) With four, ingest on SQLite ran at 77 % of its speed while a day of 10 million
/// rows moved (BENCHMARKS.md, "Audit archive").
const REST_FACTOR: u32 = 9;
/// How often the server runs a pass, and how long after it starts the first one comes.
const EVERY: Duration = Duration::from_secs(3600);
const FIRST_AFTER: Duration = Duration::from_secs(60);
const MS_PER_DAY: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is locked: another process is archiving or restoring")]
    Locked(PathBuf),
    #[error("{0}")]
    Refused(String),
    /// The blocking task writing a file panicked or was cancelled.
    #[error("archive writer: {0}")]
    Writer(#[from] tokio::task::JoinError),
}

/// What a pass or a restore moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    pub hosts: usize,
    pub rows: u64,
    pub files: usize,
}

pub struct Retention {
    store: Store,
    key: ChainKey,
    dir: PathBuf,
}

impl Retention {
    /// `key` is the chain key (as `AuditService` gets it); `dir` the archive directory.
    pub fn new(store: Store, key: &[u8], dir: PathBuf) -> Retention {
        Retention { store, key: ChainKey::new(key), dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cutoff for keeping `days` days: the start of the UTC day `days` days before today.
    pub fn cutoff(days: u32, now: i64) -> i64 {
        crate::calendar::day_start(now - i64::from(days) * MS_PER_DAY)
    }

    /// Moves every row received before `cutoff` (Unix ms) into the archive.
    pub async fn archive_before(&self, cutoff: i64) -> Result<Moved, RetentionError> {
        let _lock = Lock::take(&self.dir)?;
        let lines: HashMap<i64, ArchivedUpTo> =
            self.store.archived_up_to().await?.into_iter().map(|l| (l.host_id, l)).collect();
        let names: HashMap<i64, String> = self.store.list_hosts().await?.into_iter().map(|h| (h.id, h.name)).collect();
        let mut moved = Moved::default();
        for host_id in self.store.chained_hosts().await? {
            let from = match lines.get(&host_id) {
                Some(line) if !archive::line_is_genuine(&self.key, line) => {
                    return Err(RetentionError::Refused(format!(
                        "host #{host_id}: the database's archive line was changed (its mark does not match); \
                         run `omserver audit verify` and nothing is moved until it is explained"
                    )))
                }
                Some(line) => (line.last_seq, line.last_hash.clone()),
                None => (0, GENESIS.to_owned()),
            };
            let name = names.get(&host_id).map_or_else(|| format!("#{host_id}"), Clone::clone);
            let before = moved.rows;
            self.archive_host(host_id, &name, from, cutoff, &mut moved).await?;
            if moved.rows > before {
                moved.hosts += 1;
                tracing::info!(host = %name, rows = moved.rows - before, "audit rows archived");
            }
        }
        Ok(moved)
    }

    async fn archive_host(
        &self,
        host_id: i64,
        host: &str,
        (mut seq, mut hash): (i64, String),
        cutoff: i64,
        moved: &mut Moved,
    ) -> Result<(), RetentionError> {
        // A pass that stopped after renaming a file but before all its rows left the database: finish it.
        if let Some(file) = archive::last_file(&self.dir, host_id)? {
            if file.last_seq > seq {
                let (_, positions) = archive::positions(&file.path)?;
                let rest: Vec<(i64, String)> = positions.into_iter().filter(|(s, _)| *s > seq).collect();
                let count = rest.len();
                let cuts: Vec<(i64, String)> = rest
                    .into_iter()
                    .enumerate()
                    .filter(|(n, _)| (n + 1) % DELETE_BATCH == 0 || n + 1 == count)
                    .map(|(_, cut)| cut)
                    .collect();
                moved.rows += self.delete_up_to(host_id, &cuts).await?;
                if let Some((s, h)) = cuts.last() {
                    (seq, hash) = (*s, h.clone());
                }
            }
        }
        let mut open: Option<OpenFile> = None;
        // Most hosts have a day or so to move: start small, so that the first read does not fetch thousands of
        // rows to keep; grow while pages are wholly before the cutoff.
        let mut size = FIRST_PAGE;
        loop {
            let started = Instant::now();
            let page = self.store.audit_chain_rows(host_id, seq, size).await?;
            let full = page.len() as i64 == size;
            size = (size * 2).min(PAGE);
            tokio::time::sleep(started.elapsed() * REST_FACTOR).await;
            // Compressing and writing is blocking work: off the runtime's threads, a page at a time.
            let (dir, key, host, prev) = (self.dir.clone(), self.key.clone(), host.to_owned(), hash.clone());
            let written =
                tokio::task::spawn_blocking(move || write_page(&dir, &key, host_id, &host, prev, open, page, cutoff))
                    .await??;
            open = written.open;
            for cuts in written.finished {
                moved.files += 1;
                moved.rows += self.delete_up_to(host_id, &cuts).await?;
            }
            if let Some(last) = written.last {
                (seq, hash) = last;
            }
            if written.past_cutoff || !full {
                break;
            }
        }
        if let Some(open) = open {
            let key = self.key.clone();
            let cuts = tokio::task::spawn_blocking(move || open.finish(&key)).await??;
            if let Some(cuts) = cuts {
                moved.files += 1;
                moved.rows += self.delete_up_to(host_id, &cuts).await?;
            }
        }
        Ok(())
    }

    /// Deletes a host's rows up to each cut in turn, one transaction per cut, moving the archive line with it;
    /// rests [`REST_FACTOR`] times as long as each transaction took.
    async fn delete_up_to(&self, host_id: i64, cuts: &[(i64, String)]) -> Result<u64, RetentionError> {
        let mut deleted = 0;
        for (seq, hash) in cuts {
            let started = Instant::now();
            let line = archive::archive_line(&self.key, host_id, *seq, hash, now_ms());
            deleted += self.store.delete_archived(&line).await?;
            tokio::time::sleep(started.elapsed() * REST_FACTOR).await;
        }
        Ok(deleted)
    }

    /// Puts a host's archived rows received on or after `since` (a UTC day; all when `None`) back into the
    /// database, newest file first, each file checked before its rows go back and removed once they are all in.
    pub async fn restore(&self, host_id: i64, since: Option<&str>) -> Result<Moved, RetentionError> {
        let _lock = Lock::take(&self.dir)?;
        let line = self.store.archived_up_to().await?.into_iter().find(|l| l.host_id == host_id);
        let Some(mut line) = line else {
            return Err(RetentionError::Refused(format!("host #{host_id} has nothing archived")));
        };
        if !archive::line_is_genuine(&self.key, &line) {
            return Err(RetentionError::Refused(format!(
                "host #{host_id}: the database's archive line was changed (its mark does not match)"
            )));
        }
        let mut moved = Moved::default();
        let files = archive::files(&archive::host_dir(&self.dir, host_id))?;
        for file in files.iter().rev().filter(|f| since.is_none_or(|day| f.day.as_str() >= day)) {
            if file.last_seq != line.last_seq {
                return Err(RetentionError::Refused(format!(
                    "{} does not end where the database's archived rows end (position {}); restore stops here",
                    file.path.display(),
                    line.last_seq
                )));
            }
            let (header, rows) = self.checked_rows(&file.path)?;
            // Newest batch first, so that the archive line always stays just below the rows in the database.
            for (n, batch) in rows.chunks(RESTORE_BATCH).enumerate().rev() {
                let Some(first) = batch.first() else { continue };
                let prev = match (n * RESTORE_BATCH).checked_sub(1) {
                    Some(before) => rows[before].row_hash.clone(),
                    None => header.prev_hash.clone(),
                };
                line = archive::archive_line(&self.key, host_id, first.chain_seq - 1, &prev, now_ms());
                self.store.restore_archived(batch, &line).await?;
                moved.rows += batch.len() as u64;
            }
            std::fs::remove_file(&file.path).map_err(|source| ArchiveError::Io { path: file.path.clone(), source })?;
            moved.files += 1;
        }
        moved.hosts = usize::from(moved.rows > 0);
        Ok(moved)
    }

    /// A file's rows, refused unless every row's MAC and position and the end line check out.
    fn checked_rows(&self, path: &Path) -> Result<(archive::Header, Vec<AuditRow>), RetentionError> {
        let mut reader = FileReader::open(path)?;
        let header = reader.header.clone();
        let (mut prev, mut expected) = (header.prev_hash.clone(), header.first_seq);
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row()? {
            if row.chain_seq != expected || chain::seal(&self.key, &row, &prev, &chain::dedup_key(&row)) != row.row_hash
            {
                return Err(RetentionError::Refused(format!(
                    "{}: the row at chain position {} does not verify; nothing of this file is restored",
                    path.display(),
                    row.chain_seq
                )));
            }
            prev.clone_from(&row.row_hash);
            expected += 1;
            rows.push(row);
        }
        match &reader.end {
            Some(end) if end.last_seq == expected - 1 && end.last_hash == prev => Ok((header, rows)),
            _ => Err(RetentionError::Refused(format!("{}: its end line is missing or wrong", path.display()))),
        }
    }
}

/// A file being written: its day, and where the deletes will cut (every [`DELETE_BATCH`] rows and its last row).
struct OpenFile {
    writer: FileWriter,
    day: String,
    cuts: Vec<(i64, String)>,
}

impl OpenFile {
    /// Closes the file (in place on disk) and returns its cuts; `None` for a file without rows.
    fn finish(mut self, key: &ChainKey) -> Result<Option<Vec<(i64, String)>>, ArchiveError> {
        if let Some(last) = self.writer.last() {
            if self.cuts.last() != Some(last) {
                self.cuts.push(last.clone());
            }
        }
        Ok(self.writer.finish(key)?.map(|_| self.cuts))
    }
}

/// What writing one page left: the file still open, the files finished (their cuts), the last row written and
/// whether the page reached the cutoff.
struct Written {
    open: Option<OpenFile>,
    finished: Vec<Vec<(i64, String)>>,
    last: Option<(i64, String)>,
    past_cutoff: bool,
}

/// Writes a page of a host's rows (in chain order, following the row with MAC `prev`) into day files, up to the
/// cutoff.
#[allow(clippy::too_many_arguments)]
fn write_page(
    dir: &Path,
    key: &ChainKey,
    host_id: i64,
    host: &str,
    mut prev: String,
    mut open: Option<OpenFile>,
    page: Vec<AuditRow>,
    cutoff: i64,
) -> Result<Written, ArchiveError> {
    let mut written = Written { open: None, finished: Vec::new(), last: None, past_cutoff: false };
    for row in page {
        if row.received_at >= cutoff {
            written.past_cutoff = true;
            break;
        }
        let day = crate::calendar::utc_day(row.received_at);
        if open.as_ref().is_some_and(|o| o.day != day) {
            if let Some(cuts) = open.take().map(|o| o.finish(key)).transpose()?.flatten() {
                written.finished.push(cuts);
            }
        }
        let file = match &mut open {
            Some(file) => file,
            None => open.insert(OpenFile {
                writer: FileWriter::create(dir, host_id, host, &day, row.chain_seq, &prev)?,
                day,
                cuts: Vec::new(),
            }),
        };
        file.writer.push(&row)?;
        if file.writer.rows() % DELETE_BATCH as u64 == 0 {
            file.cuts.push((row.chain_seq, row.row_hash.clone()));
        }
        prev.clone_from(&row.row_hash);
        written.last = Some((row.chain_seq, row.row_hash));
    }
    written.open = open;
    Ok(written)
}

/// When the server's passes come: the first `first_after` its start, then one every `every`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub first_after: Duration,
    pub every: Duration,
}

/// The server's schedule: a pass every hour, the first a minute after start.
pub const HOURLY: Schedule = Schedule { first_after: FIRST_AFTER, every: EVERY };

/// Runs a pass every hour (the first a minute after start) while the server serves, keeping `days` days.
pub async fn run(retention: Arc<Retention>, days: u32, shutdown: CancellationToken) {
    run_on(retention, HOURLY, move || Retention::cutoff(days, now_ms()), shutdown).await;
}

/// Runs a pass on `schedule`, each moving the rows received before `cutoff()` (Unix ms), until `shutdown`.
pub async fn run_on(
    retention: Arc<Retention>,
    schedule: Schedule,
    cutoff: impl Fn() -> i64,
    shutdown: CancellationToken,
) {
    let mut wait = schedule.first_after;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = schedule.every;
        let cutoff = cutoff();
        let started = Instant::now();
        let pass = tokio::select! {
            () = shutdown.cancelled() => return,
            pass = retention.archive_before(cutoff) => pass,
        };
        match pass {
            Ok(moved) if moved.rows > 0 => tracing::info!(
                rows = moved.rows, hosts = moved.hosts, files = moved.files,
                secs = started.elapsed().as_secs_f64(), dir = %retention.dir.display(),
                "audit retention pass"
            ),
            Ok(_) => tracing::debug!("audit retention pass: nothing to move"),
            Err(err) => tracing::error!(error = %err, "audit retention pass failed; the next pass tries again"),
        }
    }
}

/// An exclusive `flock` on `<dir>/.lock`, released when dropped (or when the process ends).
struct Lock {
    _held: File,
}

impl Lock {
    fn take(dir: &Path) -> Result<Lock, RetentionError> {
        std::fs::create_dir_all(dir).map_err(|source| ArchiveError::Io { path: dir.to_owned(), source })?;
        let path = dir.join(".lock");
        let file = File::create(&path).map_err(|source| ArchiveError::Io { path: path.clone(), source })?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(RetentionError::Locked(path));
        }
        Ok(Lock { _held: file })
    }
}
