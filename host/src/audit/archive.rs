//! Audit archive files: where retention moves rows that leave the database, and how they are read back.
//!
//! A directory per host, `host-<id>/`, holding one gzip file per run of consecutive chain positions received on
//! one UTC day: `<day>.<first>-<last>.jsonl.gz` (positions zero-padded to 12 digits, so names sort in chain
//! order). Normally one file per host per day. Each file is JSON Lines:
//!
//! 1. a header: `{"omserver_audit_archive":1,"host_id":…,"host":"web1","day":"2026-09-04","first_seq":…,
//!    "prev_hash":"…"}`; `prev_hash` is the MAC of the row before the first (the previous file's last, or 64 zeros);
//! 2. one line per row, oldest first, with every stored column ([`AuditRow`]: `id`, `host_id`, `history_ip`,
//!    `history_command`, `received_at`, `chain_seq`, `row_hash`, …), as `zcat FILE | jq` shows them;
//! 3. an end: `{"end":{"rows":…,"last_seq":…,"last_hash":"…","mac":"…"}}`, `mac` being the chain key's MAC of
//!    the header's fields and the end's, so that a file cut short or renamed is caught even when it is the last.
//!
//! Each row keeps its chain MAC: the archive is checked by walking each host's files in order exactly as
//! `audit verify` walks the database ([`verify`]), and the database's archive line ([`ArchivedUpTo`]) names the
//! position and MAC the archive must end with. A file is written under a temporary name, flushed to disk and
//! renamed into place before any of its rows leave the database.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};
use serde::{Deserialize, Serialize};

use super::chain::{self, ChainKey, Finding, HostChain, Report, GENESIS};
use crate::store::{ArchivedUpTo, AuditRow};

/// The format's version, under the header's `omserver_audit_archive` key.
const VERSION: u32 = 1;
/// The purpose in an archive file's end MAC, and in the database's archive line.
const FILE_PURPOSE: &str = "omserver audit archive file v1";
const LINE_PURPOSE: &str = "omserver audit archived up to v1";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}, line {line}: {problem}")]
    Format { path: PathBuf, line: usize, problem: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_owned(), source }
}

/// A file's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub omserver_audit_archive: u32,
    pub host_id: i64,
    /// The host's inventory name when the file was written.
    pub host: String,
    pub day: String,
    pub first_seq: i64,
    pub prev_hash: String,
}

/// A file's last line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    pub rows: u64,
    pub last_seq: i64,
    pub last_hash: String,
    pub mac: String,
}

#[derive(Serialize, Deserialize)]
struct EndLine {
    end: End,
}

/// The MAC that closes a file: its header and its end.
fn file_mac(key: &ChainKey, h: &Header, rows: u64, last_seq: i64, last_hash: &str) -> String {
    key.mark(
        FILE_PURPOSE,
        &[
            &h.host_id.to_le_bytes(),
            h.day.as_bytes(),
            &h.first_seq.to_le_bytes(),
            h.prev_hash.as_bytes(),
            &rows.to_le_bytes(),
            &last_seq.to_le_bytes(),
            last_hash.as_bytes(),
        ],
    )
}

/// The database's archive line for a host archived up to `last_seq`, with its MAC.
pub fn archive_line(key: &ChainKey, host_id: i64, last_seq: i64, last_hash: &str, at: i64) -> ArchivedUpTo {
    let mark = key.mark(LINE_PURPOSE, &[&host_id.to_le_bytes(), &last_seq.to_le_bytes(), last_hash.as_bytes()]);
    ArchivedUpTo { host_id, last_seq, last_hash: last_hash.to_owned(), mark, archived_at: at }
}

/// Whether a stored archive line is one the server wrote.
pub fn line_is_genuine(key: &ChainKey, line: &ArchivedUpTo) -> bool {
    archive_line(key, line.host_id, line.last_seq, &line.last_hash, line.archived_at).mark == line.mark
}

/// A host's directory in the archive.
pub fn host_dir(dir: &Path, host_id: i64) -> PathBuf {
    dir.join(format!("host-{host_id}"))
}

/// An archive file as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    pub path: PathBuf,
    pub day: String,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// Parses `<day>.<first>-<last>.jsonl.gz`; anything else (temporary files, notes an admin left) is not one.
fn file_name(path: &Path) -> Option<FileName> {
    let name = path.file_name()?.to_str()?.strip_suffix(".jsonl.gz")?;
    let (day, range) = name.split_once('.')?;
    let (first, last) = range.split_once('-')?;
    crate::calendar::utc_ms(day, crate::calendar::End::Start)?;
    Some(FileName {
        path: path.to_owned(),
        day: day.to_owned(),
        first_seq: first.parse().ok()?,
        last_seq: last.parse().ok()?,
    })
}

/// The entries of `dir`; none when it does not exist (an archive nothing was moved into yet).
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>, ArchiveError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<_, _>>().map_err(io_at(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ArchiveError::Io { path: dir.to_owned(), source: e }),
    }
}

/// The archive's hosts: host id → directory, from the `host-<id>` directories present.
pub fn hosts(dir: &Path) -> Result<BTreeMap<i64, PathBuf>, ArchiveError> {
    Ok(entries(dir)?
        .into_iter()
        .filter_map(|entry| {
            let id = entry.file_name().to_str()?.strip_prefix("host-")?.parse().ok()?;
            Some((id, entry.path()))
        })
        .collect())
}

/// A host's archive files in chain order.
pub fn files(host_dir: &Path) -> Result<Vec<FileName>, ArchiveError> {
    let mut found: Vec<FileName> = entries(host_dir)?.into_iter().filter_map(|e| file_name(&e.path())).collect();
    found.sort_by_key(|f| (f.first_seq, f.last_seq));
    Ok(found)
}

/// Writes one archive file: rows are pushed in chain order, then [`FileWriter::finish`] closes, syncs and renames
/// it into place. Dropped unfinished, it leaves only a temporary file, which the next run overwrites.
pub struct FileWriter {
    header: Header,
    dir: PathBuf,
    temp: PathBuf,
    out: GzEncoder<BufWriter<File>>,
    rows: u64,
    last: Option<(i64, String)>,
}

impl FileWriter {
    pub fn create(
        dir: &Path,
        host_id: i64,
        host: &str,
        day: &str,
        first_seq: i64,
        prev_hash: &str,
    ) -> Result<FileWriter, ArchiveError> {
        let dir = host_dir(dir, host_id);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let temp = dir.join(format!(".{day}.{first_seq:012}.tmp"));
        let file = File::create(&temp).map_err(io_at(&temp))?;
        let header = Header {
            omserver_audit_archive: VERSION,
            host_id,
            host: host.to_owned(),
            day: day.to_owned(),
            first_seq,
            prev_hash: prev_hash.to_owned(),
        };
        let mut writer = FileWriter {
            header,
            dir,
            temp,
            out: GzEncoder::new(BufWriter::new(file), Compression::default()),
            rows: 0,
            last: None,
        };
        let header = serde_json::to_string(&writer.header).map_err(|e| writer.format_error(e))?;
        writer.line(&header)?;
        Ok(writer)
    }

    fn format_error(&self, e: serde_json::Error) -> ArchiveError {
        ArchiveError::Format { path: self.temp.clone(), line: self.rows as usize + 1, problem: e.to_string() }
    }

    fn line(&mut self, text: &str) -> Result<(), ArchiveError> {
        let temp = &self.temp;
        self.out.write_all(text.as_bytes()).and_then(|()| self.out.write_all(b"\n")).map_err(io_at(temp))
    }

    pub fn push(&mut self, row: &AuditRow) -> Result<(), ArchiveError> {
        let text = serde_json::to_string(row).map_err(|e| self.format_error(e))?;
        self.line(&text)?;
        self.rows += 1;
        self.last = Some((row.chain_seq, row.row_hash.clone()));
        Ok(())
    }

    /// The last row pushed: its position and MAC.
    pub fn last(&self) -> Option<&(i64, String)> {
        self.last.as_ref()
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the end, flushes the file to disk and renames it to its final name (then syncs the directory).
    /// Returns the file's name. A file without rows is not kept.
    pub fn finish(mut self, key: &ChainKey) -> Result<Option<FileName>, ArchiveError> {
        let Some((last_seq, last_hash)) = self.last.clone() else {
            drop(self.out);
            fs::remove_file(&self.temp).map_err(io_at(&self.temp))?;
            return Ok(None);
        };
        let mac = file_mac(key, &self.header, self.rows, last_seq, &last_hash);
        let end = EndLine { end: End { rows: self.rows, last_seq, last_hash, mac } };
        let text = serde_json::to_string(&end).map_err(|e| self.format_error(e))?;
        self.line(&text)?;
        let temp = self.temp.clone();
        let file = self.out.finish().and_then(|w| w.into_inner().map_err(|e| e.into_error())).map_err(io_at(&temp))?;
        file.sync_all().map_err(io_at(&temp))?;
        let name = format!("{}.{:012}-{last_seq:012}.jsonl.gz", self.header.day, self.header.first_seq);
        let path = self.dir.join(name);
        fs::rename(&temp, &path).map_err(io_at(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_at(&self.dir))?;
        Ok(Some(FileName { path, day: self.header.day.clone(), first_seq: self.header.first_seq, last_seq }))
    }
}

/// Reads one archive file: the header at open, then rows, then the end.
pub struct FileReader {
    path: PathBuf,
    lines: io::Lines<BufReader<MultiGzDecoder<File>>>,
    line: usize,
    pub header: Header,
    /// Set once the end line has been read.
    pub end: Option<End>,
}

impl FileReader {
    pub fn open(path: &Path) -> Result<FileReader, ArchiveError> {
        let file = File::open(path).map_err(io_at(path))?;
        let mut lines = BufReader::new(MultiGzDecoder::new(file)).lines();
        let format = |problem: String| ArchiveError::Format { path: path.to_owned(), line: 1, problem };
        let first = lines.next().ok_or_else(|| format("empty file".into()))?.map_err(io_at(path))?;
        let header: Header = serde_json::from_str(&first).map_err(|e| format(format!("not an archive header: {e}")))?;
        if header.omserver_audit_archive != VERSION {
            return Err(format(format!(
                "archive format version {} (this server reads {VERSION})",
                header.omserver_audit_archive
            )));
        }
        Ok(FileReader { path: path.to_owned(), lines, line: 1, header, end: None })
    }

    fn format(&self, problem: impl Into<String>) -> ArchiveError {
        ArchiveError::Format { path: self.path.clone(), line: self.line, problem: problem.into() }
    }

    /// The next row; `None` after the end line (then [`FileReader::end`] is set) or at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<AuditRow>, ArchiveError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let Some(text) = self.lines.next() else { return Ok(None) };
        self.line += 1;
        let text = text.map_err(io_at(&self.path))?;
        if text.starts_with("{\"end\"") {
            let end: EndLine = serde_json::from_str(&text).map_err(|e| self.format(format!("bad end line: {e}")))?;
            self.end = Some(end.end);
            if self.lines.next().is_some() {
                self.line += 1;
                return Err(self.format("lines after the end line"));
            }
            return Ok(None);
        }
        let row: AuditRow = serde_json::from_str(&text).map_err(|e| self.format(format!("bad row: {e}")))?;
        Ok(Some(row))
    }
}

/// Checks the archive itself: every host's files in order, each row's MAC and position as `audit verify` checks
/// the database, each file's header and end. With `lines` (the database's archive lines), also that each host's
/// archive ends exactly where the database says its kept rows begin.
pub fn verify(dir: &Path, key: &ChainKey, lines: Option<&[ArchivedUpTo]>) -> Result<Report, ArchiveError> {
    let mut report = Report::default();
    let hosts = hosts(dir)?;
    let mut ids: Vec<i64> = hosts.keys().copied().collect();
    if let Some(lines) = lines {
        ids.extend(lines.iter().map(|l| l.host_id).filter(|id| !hosts.contains_key(id)));
        ids.sort_unstable();
    }
    for host_id in ids {
        let (rows_before, findings_before) = (report.rows, report.findings.len());
        let mut name = format!("#{host_id}");
        let find = |findings: &mut Vec<Finding>, chain_seq: i64, problem: String| {
            findings.push(Finding { host_id, chain_seq, problem })
        };
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_owned();
        let files = match hosts.get(&host_id) {
            Some(host_dir) => files(host_dir)?,
            None => Vec::new(),
        };
        for file in &files {
            let shown = file.path.display();
            let mut reader = match FileReader::open(&file.path) {
                Ok(reader) => reader,
                Err(e) => {
                    find(&mut report.findings, expected_seq, format!("{e}"));
                    continue;
                }
            };
            name.clone_from(&reader.header.host);
            let header = reader.header.clone();
            if header.host_id != host_id || header.first_seq != file.first_seq {
                find(
                    &mut report.findings,
                    file.first_seq,
                    format!("{shown}: its header names another host or position"),
                );
            }
            if header.first_seq == expected_seq && header.prev_hash != prev {
                find(&mut report.findings, expected_seq, format!("{shown}: does not continue the file before it"));
            }
            let mut rows = 0u64;
            loop {
                let row = match reader.next_row() {
                    Ok(Some(row)) => row,
                    Ok(None) => break,
                    Err(e) => {
                        find(&mut report.findings, expected_seq, format!("{e}"));
                        break;
                    }
                };
                rows += 1;
                report.rows += 1;
                if row.chain_seq != expected_seq {
                    let missing = row.chain_seq - expected_seq;
                    if missing > 0 {
                        find(
                            &mut report.findings,
                            row.chain_seq,
                            format!(
                                "{shown}: {missing} row(s) missing before this one: chain positions {expected_seq}..{}",
                                row.chain_seq - 1
                            ),
                        );
                    } else {
                        find(&mut report.findings, row.chain_seq, format!("{shown}: a row out of order or repeated"));
                    }
                } else if row.host_id != host_id
                    || chain::seal(key, &row, &prev, &chain::dedup_key(&row)) != row.row_hash
                {
                    find(
                        &mut report.findings,
                        row.chain_seq,
                        format!("{shown}: row id {} was edited or forged: its contents do not match its MAC", row.id),
                    );
                }
                expected_seq = row.chain_seq + 1;
                prev.clone_from(&row.row_hash);
            }
            match &reader.end {
                None => find(&mut report.findings, expected_seq, format!("{shown}: cut short (no end line)")),
                Some(end) => {
                    if end.rows != rows || end.last_seq != expected_seq - 1 || end.last_hash != prev {
                        find(
                            &mut report.findings,
                            expected_seq - 1,
                            format!("{shown}: its end line does not match its rows"),
                        );
                    } else if file_mac(key, &header, end.rows, end.last_seq, &end.last_hash) != end.mac {
                        find(&mut report.findings, end.last_seq, format!("{shown}: its end line was forged"));
                    } else if end.last_seq != file.last_seq {
                        find(
                            &mut report.findings,
                            end.last_seq,
                            format!("{shown}: renamed (its name says {})", file.last_seq),
                        );
                    }
                }
            }
        }
        let archived_to = expected_seq - 1;
        if let Some(lines) = lines {
            match lines.iter().find(|l| l.host_id == host_id) {
                Some(line) if !line_is_genuine(key, line) => find(
                    &mut report.findings,
                    line.last_seq,
                    "the database's archive line was changed: its mark does not match".into(),
                ),
                Some(line) if line.last_seq > archived_to => find(
                    &mut report.findings,
                    archived_to + 1,
                    format!(
                        "the database says positions up to {} were archived; the archive ends at {archived_to}: \
                         {} row(s) missing from it",
                        line.last_seq,
                        line.last_seq - archived_to
                    ),
                ),
                Some(line) if line.last_seq < archived_to => find(
                    &mut report.findings,
                    line.last_seq + 1,
                    format!(
                        "the archive goes on past the database's archive line ({}) to {archived_to}: rows restored \
                         whose files are still here, or files from another database",
                        line.last_seq
                    ),
                ),
                Some(line) if line.last_hash != prev => find(
                    &mut report.findings,
                    line.last_seq,
                    "the archive's last row is not the one the database's archive line names".into(),
                ),
                Some(_) => {}
                None if archived_to > 0 => find(
                    &mut report.findings,
                    archived_to,
                    "the database has no archive line for this host: archive files from another database?".into(),
                ),
                None => {}
            }
        }
        report.hosts += 1;
        report.chains.push(HostChain {
            host_id,
            host: name,
            rows: report.rows - rows_before,
            problems: report.findings.len() - findings_before,
        });
    }
    Ok(report)
}

/// What `audit search --archive` looks for: the live filters and a window of time received.
#[derive(Debug, Default)]
pub struct Search {
    pub filter: super::Filter,
    /// Host names (as the files' headers give them); empty: any.
    pub host_names: Vec<String>,
    pub received_from: Option<i64>,
    pub received_to: Option<i64>,
}

/// Reads the archive's files in each host's chain order and hands every matching row, with the host's name, to
/// `found` until it returns false. Files whose day is outside the window are not opened.
pub fn search(dir: &Path, search: &Search, mut found: impl FnMut(&str, AuditRow) -> bool) -> Result<u64, ArchiveError> {
    let day = |ms: Option<i64>| ms.map(crate::calendar::utc_day);
    let (first_day, last_day) = (day(search.received_from), day(search.received_to));
    let mut matched = 0;
    for (host_id, host_dir) in hosts(dir)? {
        if search.filter.host_ids.as_ref().is_some_and(|ids| !ids.contains(&host_id)) {
            continue;
        }
        for file in files(&host_dir)? {
            if first_day.as_ref().is_some_and(|d| file.day < *d) || last_day.as_ref().is_some_and(|d| file.day > *d) {
                continue;
            }
            let mut reader = FileReader::open(&file.path)?;
            if !search.host_names.is_empty() && !search.host_names.contains(&reader.header.host) {
                break;
            }
            let host = reader.header.host.clone();
            while let Some(row) = reader.next_row()? {
                let in_window = search.received_from.is_none_or(|t| row.received_at >= t)
                    && search.received_to.is_none_or(|t| row.received_at <= t);
                if in_window && search.filter.matches(&row) {
                    matched += 1;
                    if !found(&host, row) {
                        return Ok(matched);
                    }
                }
            }
        }
    }
    Ok(matched)
}

/// A host's newest archive file (by its name): where a pass interrupted after writing a file, but before all its
/// rows left the database, is picked up.
pub fn last_file(dir: &Path, host_id: i64) -> Result<Option<FileName>, ArchiveError> {
    Ok(files(&host_dir(dir, host_id))?.pop())
}

/// The (position, MAC) of every row in a file, in order: for finishing what an interrupted run began.
pub fn positions(path: &Path) -> Result<(Header, Vec<(i64, String)>), ArchiveError> {
    let mut reader = FileReader::open(path)?;
    let mut found = Vec::new();
    while let Some(row) = reader.next_row()? {
        found.push((row.chain_seq, row.row_hash));
    }
    if reader.end.is_none() {
        return Err(reader.format("cut short (no end line)"));
    }
    Ok((reader.header, found))
}
