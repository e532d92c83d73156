//! The command index: how a search term is put to it ([`words`], [`fts_phrase`]), and its keepers, just behind
//! the audit writer: on SQLite the `audit-index` thread
//! (`server_history_text`, FTS5 trigram), on PostgreSQL a task that one server of the database runs at a time
//! ([`Store::keep_audit_index`]; `server_history_text`, the command's words under a pg_trgm GIN index; migration
//! 0016).
//!
//! Indexing a command costs several times what storing it does (about 7 µs a row against the writer's ~10 µs
//! for everything else), so the audit writer does not do it: this thread indexes the rows above
//! `audit_text_position` in id order, a few hundred per transaction, and moves the position. A search reads
//! the rows above the position by scanning them ([`super::audit_search`]), so it always sees every stored row.
//!
//! It takes at most about a fifth of one core while rows are waiting (it sleeps four times as long as each batch
//! took), so a burst of ingest keeps its speed and the index catches up afterwards; between bursts the writer
//! nudges it after each durable commit. Each batch holds SQLite's write lock for a few milliseconds, which the
//! writer waits out within its busy timeout.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        mpsc::{self, RecvTimeoutError, SyncSender},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{on_pool, Dialect, Store, StoreError};

/// PostgreSQL: what is indexed of a command (`history_command` in SQL), as migration 0016 fills and its trigger
/// updates it: every run of ASCII characters other than letters and digits becomes one `q`, so that pg_trgm,
/// which makes trigrams of words only, sees an address or a path as one word.
pub(super) const PG_WORDS: &str =
    r"regexp_replace(history_command, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', 'q', 'g')";

/// A term as PostgreSQL's index holds commands ([`PG_WORDS`]): each run of ASCII characters
/// other than letters and digits made one `q`. A substring of a command maps to a substring of its words, so the
/// index finds every row that matches; the rule then drops the others. No LIKE wildcard survives the mapping.
pub(super) fn words(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    let mut in_run = false;
    for c in term.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            if !in_run {
                out.push('q');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Whether pg_trgm can take a trigram from `%words%`: three ASCII letters or digits in a row. (Other letters may
/// count too, depending on the database's locale; without a trigram the GIN index has nothing to look up and
/// PostgreSQL reads all of it, so only what counts everywhere is trusted.)
pub(super) fn has_ascii_trigram(words: &str) -> bool {
    words
        .chars()
        .collect::<Vec<_>>()
        .windows(super::INDEXED_TERM_CHARS)
        .any(|w| w.iter().all(char::is_ascii_alphanumeric))
}

/// An FTS5 phrase: the term in double quotes, its own doubled. The trigram tokenizer makes it the term's trigrams
/// in order, which only a row holding the term (case folded) has.
pub(super) fn fts_phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// A trigram with this many rows or more is common: FTS5 reads a phrase newest first by stepping through the rows
/// of every trigram in it, and one in every command (`uni` of `systemctl status unit…`, in 200 000 rows) cost
/// ~0.5 ms before the first row and ~1.4 µs a row after; the phrase's one rare trigram alone, 0.1 ms for 100 rows.
const COMMON_ROWS: i64 = 5_000;
/// How long a trigram's count is used: the mix of commands changes slowly.
const COUNT_FOR: Duration = Duration::from_secs(600);
/// At most this many trigrams' counts are kept (then the memory starts again).
const COUNTS_KEPT: usize = 10_000;

/// What the command index is asked for a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FtsMatch {
    /// The whole term: every trigram of it, in order.
    Phrase(String),
    /// Its rarest trigrams (at most two), which every row holding the term holds: the statement checks the term
    /// itself as well ([`super::audit_search`]'s LIKE pattern).
    Rare(String),
}

/// The rows each trigram had in the command index, up to [`COMMON_ROWS`], and when counted. A hint for the plan:
/// a stale count makes a search slower, never different.
#[derive(Debug, Clone, Default)]
pub(super) struct TrigramCounts(Arc<Mutex<HashMap<String, (i64, Instant)>>>);

impl TrigramCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (i64, Instant)>> {
        // Counts, each whole or absent: a panic elsewhere cannot leave one wrong.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The distinct trigrams of `term` as the tokenizer takes them (three characters; it folds their case), each as
/// written in the term.
fn trigrams(term: &str) -> Vec<String> {
    let chars: Vec<char> = term.chars().collect();
    let mut seen = Vec::<String>::new();
    for window in chars.windows(super::INDEXED_TERM_CHARS) {
        let trigram: String = window.iter().collect();
        if !seen.iter().any(|s| s.to_lowercase() == trigram.to_lowercase()) {
            seen.push(trigram);
        }
    }
    seen
}

impl Store {
    /// What the command index is asked for `term` (SQLite): its rarest trigrams when it has one under
    /// [`COMMON_ROWS`] rows, else the whole phrase. Counting a trigram reads at most that many of its rows
    /// (oldest first, the cheap way), once per [`COUNT_FOR`].
    pub(super) async fn fts_match(&self, term: &str) -> Result<FtsMatch, StoreError> {
        let trigrams = trigrams(term);
        if trigrams.len() < 2 {
            return Ok(FtsMatch::Phrase(fts_phrase(term)));
        }
        let mut counted = Vec::with_capacity(trigrams.len());
        for trigram in trigrams {
            let kept = self.trigram_counts.lock().get(&trigram.to_lowercase()).copied();
            let rows = match kept {
                Some((rows, at)) if at.elapsed() < COUNT_FOR => rows,
                _ => self.count_trigram(&trigram).await?,
            };
            counted.push((rows, trigram));
        }
        counted.sort();
        let rare: Vec<String> = counted
            .into_iter()
            .take_while(|(rows, _)| *rows < COMMON_ROWS)
            .take(2)
            .map(|(_, t)| fts_phrase(&t))
            .collect();
        Ok(match rare.is_empty() {
            true => FtsMatch::Phrase(fts_phrase(term)),
            false => FtsMatch::Rare(rare.join(" AND ")),
        })
    }

    /// How many stored rows the command index has not taken yet (searches read those by scanning them); `None`
    /// on MariaDB/MySQL, which has none.
    pub async fn audit_text_lag(&self) -> Result<Option<i64>, StoreError> {
        if self.dialect == Dialect::MySql {
            return Ok(None);
        }
        let position = self.text_index_position().await?;
        let sql = self.sql("SELECT COUNT(*) FROM server_history WHERE id > ?");
        let lag: i64 = on_pool!(self, pool => sqlx::query_scalar(&sql).bind(position).fetch_one(pool).await)?;
        Ok(Some(lag))
    }

    /// The highest id the command index has taken ([`super::audit_text`]).
    pub(super) async fn text_index_position(&self) -> Result<i64, StoreError> {
        let position: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT position FROM audit_text_position").fetch_one(pool).await
        })?;
        Ok(position)
    }

    async fn count_trigram(&self, trigram: &str) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM (SELECT 1 FROM server_history_text WHERE server_history_text MATCH ? LIMIT ?)";
        let rows: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(fts_phrase(trigram)).bind(COMMON_ROWS).fetch_one(pool).await
        })?;
        let mut counts = self.trigram_counts.lock();
        if counts.len() >= COUNTS_KEPT {
            counts.clear();
        }
        counts.insert(trigram.to_lowercase(), (rows, Instant::now()));
        Ok(rows)
    }
}

/// Rows indexed per transaction: a few milliseconds of the write lock.
const BATCH: i64 = 500;
/// Sleep after a full batch, as a multiple of the time it took: at most 1 / (1 + 4) of a core.
const PAUSE_FACTOR: u32 = 4;
/// How long it waits for a nudge before looking anyway.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Starts the thread on the database at `path`; it runs until the returned sender is dropped. A nudge says that
/// rows were committed.
pub(super) fn start(path: &Path) -> Result<SyncSender<()>, StoreError> {
    let mut conn = super::audit_sqlite::open(path)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("audit-index".into())
        .spawn(move || loop {
            let started = Instant::now();
            match index_batch(&mut conn) {
                Ok(n) if n == BATCH as usize => {
                    std::thread::sleep(started.elapsed() * PAUSE_FACTOR);
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "audit command index: batch failed; searches scan those rows"),
            }
            match nudged.recv_timeout(IDLE_LOOK) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        })
        .map_err(|source| StoreError::Io { what: "audit index thread", source })?;
    Ok(nudge)
}

/// Indexes up to [`BATCH`] rows above the position, and moves it, in one transaction. Returns the rows indexed.
fn index_batch(conn: &mut Connection) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let position: i64 = tx.query_row("SELECT position FROM audit_text_position", [], |r| r.get(0))?;
    let last: Option<i64> = tx.query_row(
        "SELECT MAX(id) FROM (SELECT id FROM server_history WHERE id > ?1 ORDER BY id LIMIT ?2)",
        params![position, BATCH],
        |r| r.get(0),
    )?;
    let Some(last) = last else { return Ok(0) };
    let indexed = tx.execute(
        "INSERT INTO server_history_text (rowid, history_command) \
         SELECT id, history_command FROM server_history WHERE id > ?1 AND id <= ?2",
        params![position, last],
    )?;
    tx.execute("UPDATE audit_text_position SET position = ?1", [last])?;
    tx.commit()?;
    Ok(indexed)
}

/// Wakes PostgreSQL's keeper ([`Store::keep_audit_index`]) when this server's audit writer has committed rows.
#[derive(Debug, Clone, Default)]
pub(super) struct IndexNudge(Arc<Notify>);

impl IndexNudge {
    /// Rows were committed.
    pub(super) fn nudge(&self) {
        self.0.notify_one();
    }
}

impl Store {
    /// PostgreSQL's keeper of the command index, until `stop`: indexes the rows above the position, [`BATCH`]
    /// per transaction, resting as the SQLite thread does. Every server of the database may write rows, but one
    /// indexes them at a time (`serve` runs this under `cluster::lead`): with a keeper per server, three servers
    /// gave the index 2.7 times the database's time of one after a burst of ingest (BENCHMARKS.md, "Several
    /// servers"), taken from the requests of the same moment. Nudged by this server's
    /// writer; rows another server wrote are found within [`IDLE_LOOK`]. Returns at once on the other dialects
    /// (SQLite's thread belongs to its writer's connection; MariaDB has no command index).
    pub async fn keep_audit_index(&self, stop: CancellationToken) {
        let super::Pool::Postgres(pool) = &self.pool else { return };
        loop {
            let started = Instant::now();
            let full = match index_pg_batch(pool).await {
                Ok(n) => n == BATCH as u64,
                Err(err) => {
                    tracing::warn!(error = %err, "audit command index: batch failed; searches scan those rows");
                    false
                }
            };
            // A full batch rests its whole pause; otherwise a commit wakes it early.
            let rest = if full { started.elapsed() * PAUSE_FACTOR } else { IDLE_LOOK };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.audit_index_nudge.0.notified(), if !full => {}
                _ = tokio::time::sleep(rest) => {}
            }
        }
    }
}

async fn index_pg_batch(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let position: i64 =
        sqlx::query_scalar("SELECT position FROM audit_text_position FOR UPDATE").fetch_one(&mut *tx).await?;
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(id) FROM (SELECT id FROM server_history WHERE id > $1 ORDER BY id LIMIT $2) s")
            .bind(position)
            .bind(BATCH)
            .fetch_one(&mut *tx)
            .await?;
    let Some(last) = last else { return Ok(0) };
    let insert = format!(
        "INSERT INTO server_history_text (id, words) SELECT id, {PG_WORDS} FROM server_history \
         WHERE id > $1 AND id <= $2 ON CONFLICT (id) DO NOTHING"
    );
    let indexed = sqlx::query(&insert).bind(position).bind(last).execute(&mut *tx).await?.rows_affected();
    sqlx::query("UPDATE audit_text_position SET position = $1").bind(last).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_take_the_form_the_index_holds() {
        assert_eq!(words("ssh deploy@10.1.7.17"), "sshqdeployq10q1q7q17");
        assert_eq!(words(" a  -- B_%"), "qaqBq");
        assert_eq!(words("Ünï/x"), "Ünïqx");
        assert_eq!(fts_phrase("say \"hi\""), r#""say ""hi""""#);
    }

    #[test]
    fn a_terms_trigrams_are_each_taken_once_whatever_their_case() {
        assert_eq!(trigrams("aBcAbC"), ["aBc", "BcA", "cAb"]);
        assert_eq!(trigrams("ü\"é x"), ["ü\"é", "\"é ", "é x"]);
        assert!(trigrams("ab").is_empty());
    }
}
