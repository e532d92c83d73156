//! The plugin registry: which task modules are available, from which file, and why others are not.
//!
//! The registry is level-triggered: [`Registry::reconcile`] looks at the whole of plugins.d and brings the
//! registry in line with it. The watcher ([`watch`]) only decides *when* to reconcile. That keeps add, replace,
//! remove, half-written files and duplicate ids in one place, and makes a missed or coalesced filesystem event
//! harmless.
//!
//! The registry never maps a library: it checks the file, then asks a probe worker ([`crate::worker`]) to load
//! it and say what it is, and checks that answer. Everything else sees a module as an `Arc<LoadedModule>`: a job
//! pins the version it started with, and a replacement affects only later jobs.

mod library;
pub mod watch;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use omserver_plugin_api::{Metadata, ParamKind};
use serde::Serialize;

pub use library::{check_elf, LoadedModule, RejectReason};

use crate::{activity::Change, worker::Workers};

/// A file is left alone until it has not changed for this long: a deployer still writing it in place is not done.
const SETTLE: Duration = Duration::from_millis(150);

/// What one file in plugins.d currently is.
#[derive(Debug, Clone)]
enum FileState {
    Loaded(Arc<LoadedModule>),
    Rejected { id: Option<u32>, reason: String },
}

/// Size, modification time and inode: a file renamed over another is a new inode even when the rest matches.
type Fingerprint = (u64, SystemTime, u64);

#[derive(Debug, Clone)]
struct FileEntry {
    /// Size and modification time when last evaluated: unchanged files are not read again.
    fingerprint: Fingerprint,
    state: FileState,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, FileEntry>,
    /// Which file serves each module id.
    serving: HashMap<u32, String>,
}

/// One row of `GET /api/modules` and `omserver modules`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModuleListing {
    pub file: String,
    /// "loaded" or "rejected".
    pub status: &'static str,
    pub id: Option<u32>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub backends: Vec<String>,
    pub params: Vec<ParamListing>,
    pub error: Option<String>,
    /// The SHA-256 of the library file, for a loaded one.
    pub sha256: Option<String>,
    /// The servers of the database serving this very file (the same name and content), this one included when it
    /// serves it; filled by `GET /api/modules`.
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParamListing {
    pub name: String,
    pub description: String,
    pub required: bool,
    /// "integer", "choice" or "text".
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The value used when the parameter is not given: a number or a text, as `type` says.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub default: Option<serde_json::Value>,
}

/// What a reconcile pass did, for logs, metrics and the watcher.
#[derive(Debug, Default)]
pub struct Outcome {
    pub loaded: Vec<String>,
    pub rejected: Vec<String>,
    pub removed: Vec<String>,
    /// Files seen changing right now: reconcile again shortly.
    pub unsettled: bool,
    /// Each file loaded, replaced, rejected or removed, as the activity log records it.
    pub changes: Vec<Change>,
}

impl Outcome {
    /// This pass and then `next`, as one.
    pub fn extend(&mut self, next: Outcome) {
        self.loaded.extend(next.loaded);
        self.rejected.extend(next.rejected);
        self.removed.extend(next.removed);
        self.changes.extend(next.changes);
        self.unsettled = next.unsettled;
    }
}

/// The activity record of a file's new state (`before`: what the registry held for it until now).
fn change_of(file: &str, before: Option<&FileState>, after: Option<&FileState>) -> Change {
    let object = format!("module file {file}");
    let held = |state: Option<&FileState>| match state {
        Some(FileState::Loaded(m)) => {
            serde_json::json!({ "id": m.meta.id, "version": m.meta.version.to_string(), "sha256": m.sha256 })
        }
        Some(FileState::Rejected { reason, .. }) => serde_json::json!({ "rejected": reason }),
        None => serde_json::Value::Null,
    };
    match after {
        None => Change::ok("module.remove", object).fields(held(before)),
        Some(FileState::Rejected { reason, .. }) => {
            Change::ok("module.reject", object).with("was", held(before)).outcome(format!("rejected: {reason}"))
        }
        Some(FileState::Loaded(_)) if before.is_some() => {
            Change::ok("module.replace", object).changed_fields(held(before), held(after))
        }
        Some(FileState::Loaded(_)) => Change::ok("module.load", object).fields(held(after)),
    }
}

pub struct Registry {
    dir: PathBuf,
    workers: Arc<Workers>,
    state: RwLock<State>,
    /// One reconcile at a time (the start-up scan and the watcher may both ask).
    reconciling: tokio::sync::Mutex<()>,
}

impl Registry {
    /// A registry over `dir` whose files are probed by `workers`. Call `reconcile` to fill it.
    pub fn new(dir: &Path, workers: Arc<Workers>) -> Registry {
        Registry {
            dir: dir.to_owned(),
            workers,
            state: RwLock::new(State::default()),
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module serving `id`, pinned.
    pub fn get(&self, id: u32) -> Option<Arc<LoadedModule>> {
        let state = self.read();
        let file = state.serving.get(&id)?;
        match &state.files.get(file)?.state {
            FileState::Loaded(module) => Some(module.clone()),
            FileState::Rejected { .. } => None,
        }
    }

    /// The modules serving now, as (file, content hash), ordered by file: what other servers of the database
    /// learn this one serves, and which queued jobs it can take.
    pub fn serving(&self) -> Vec<(String, String)> {
        let state = self.read();
        let mut serving: Vec<(String, String)> = state
            .serving
            .values()
            .filter_map(|file| match &state.files.get(file)?.state {
                FileState::Loaded(module) => Some((file.clone(), module.sha256.clone())),
                FileState::Rejected { .. } => None,
            })
            .collect();
        serving.sort();
        serving
    }

    /// Every file in plugins.d with its status, ordered by file name.
    pub fn list(&self) -> Vec<ModuleListing> {
        let state = self.read();
        state.files.iter().map(|(file, entry)| listing(file, &entry.state, &state.serving)).collect()
    }

    /// Brings the registry in line with plugins.d. New and changed files are probed in workers, one at a time;
    /// the registry keeps serving what it has meanwhile.
    pub async fn reconcile(&self) -> Outcome {
        let _one = self.reconciling.lock().await;
        let mut outcome = Outcome::default();
        let dir = self.dir.clone();
        let present = match tokio::task::spawn_blocking(move || scan(&dir)).await {
            Ok(Ok(present)) => present,
            Ok(Err(err)) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "cannot read the plugins directory");
                return outcome;
            }
            Err(err) => {
                tracing::error!(error = %err, "plugins directory scan failed");
                return outcome;
            }
        };

        let (gone, changed) = {
            let state = self.read();
            let gone: Vec<String> = state.files.keys().filter(|f| !present.contains_key(*f)).cloned().collect();
            let changed: Vec<(String, Fingerprint)> = present
                .into_iter()
                .filter(|(file, fingerprint)| state.files.get(file).is_none_or(|e| e.fingerprint != *fingerprint))
                .collect();
            (gone, changed)
        };
        for file in gone {
            let removed = {
                let mut state = self.write();
                state.serving.retain(|_, f| *f != file);
                state.files.remove(&file)
            };
            outcome.changes.push(change_of(&file, removed.as_ref().map(|e| &e.state), None));
            self.retire(removed);
            tracing::info!(file = %file, "module file removed");
            outcome.removed.push(file);
        }

        let now = SystemTime::now();
        for (file, fingerprint) in changed {
            if now.duration_since(fingerprint.1).unwrap_or_default() < SETTLE {
                outcome.unsettled = true;
                continue;
            }
            let file_state = self.evaluate(&file).await;
            match &file_state {
                FileState::Loaded(m) => {
                    tracing::info!(file = %file, module = m.meta.id, version = %m.meta.version, "module loaded");
                    metrics::counter!("omserver_plugin_loads_total").increment(1);
                    outcome.loaded.push(file.clone());
                }
                FileState::Rejected { reason, .. } => {
                    tracing::warn!(file = %file, reason = %reason, "module file rejected");
                    metrics::counter!("omserver_plugin_rejections_total").increment(1);
                    outcome.rejected.push(file.clone());
                }
            }
            let replaced = {
                let mut state = self.write();
                // A changed file gives up its id until it is resolved again below.
                state.serving.retain(|_, f| *f != file);
                let replaced = state.files.insert(file.clone(), FileEntry { fingerprint, state: file_state.clone() });
                resolve_duplicates(&mut state);
                replaced
            };
            outcome.changes.push(change_of(&file, replaced.as_ref().map(|e| &e.state), Some(&file_state)));
            self.retire(replaced);
        }
        resolve_duplicates(&mut self.write());
        outcome
    }

    /// Retires the warm workers of a version that left the registry, unless another file has the same bytes.
    /// Jobs that pinned it still run: they start a worker of their own.
    fn retire(&self, old: Option<FileEntry>) {
        let Some(FileEntry { state: FileState::Loaded(module), .. }) = old else { return };
        let still_used =
            self.read().files.values().any(|e| matches!(&e.state, FileState::Loaded(m) if m.sha256 == module.sha256));
        if !still_used {
            self.workers.retire(&module.sha256);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn evaluate(&self, file: &str) -> FileState {
        let reject = |reason: RejectReason| FileState::Rejected {
            id: library::id_from_file_name(file),
            reason: reason.to_string(),
        };
        let path = self.dir.join(file);
        let (bytes, sha256) = match tokio::task::spawn_blocking(move || library::read_checked(&path)).await {
            Ok(Ok(read)) => read,
            Ok(Err(reason)) => return reject(reason),
            Err(err) => return reject(RejectReason::Read(std::io::Error::other(err))),
        };
        // Probes, workers and jobs all use this one copy.
        let meta = match self.workers.probe(bytes.clone(), &sha256).await {
            Ok(meta) => meta,
            Err(fault) => return reject(RejectReason::Probe(fault.while_loading())),
        };
        if let Err(reason) = library::check_metadata(&meta, file) {
            self.workers.retire(&sha256);
            return reject(reason);
        }
        FileState::Loaded(Arc::new(LoadedModule { meta, file: file.to_owned(), sha256, bytes }))
    }
}

/// The final `*.so` names in `dir` with their fingerprints. Temporary and hidden names are skipped: deployers
/// write those and rename them over.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<String, Fingerprint>> {
    let mut present = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !is_final_name(&name) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) if meta.is_file() => meta,
            _ => continue,
        };
        present.insert(name, (meta.len(), meta.modified()?, std::os::unix::fs::MetadataExt::ino(&meta)));
    }
    Ok(present)
}

/// Gives each id to one file: the one serving it already keeps it, otherwise the first by name. Every other file
/// declaring the same id is rejected with the name of the file that serves it.
fn resolve_duplicates(state: &mut State) {
    let State { files, serving, .. } = state;
    serving.retain(|id, file| {
        matches!(files.get(file.as_str()), Some(FileEntry { state: FileState::Loaded(m), .. }) if m.meta.id == *id)
    });
    for (file, entry) in files.iter() {
        let id = match &entry.state {
            FileState::Loaded(m) => m.meta.id,
            FileState::Rejected { .. } => continue,
        };
        serving.entry(id).or_insert_with(|| file.clone());
    }
}

fn is_final_name(name: &str) -> bool {
    name.ends_with(".so") && !name.starts_with('.')
}

fn listing(file: &str, state: &FileState, serving: &HashMap<u32, String>) -> ModuleListing {
    match state {
        FileState::Loaded(module) => {
            let meta = &module.meta;
            let duplicate = serving.get(&meta.id).filter(|by| by.as_str() != file);
            let (status, error) = match duplicate {
                Some(by) => ("rejected", Some(RejectReason::Duplicate { id: meta.id, by: by.clone() }.to_string())),
                None => ("loaded", None),
            };
            ModuleListing {
                file: file.to_owned(),
                status,
                id: Some(meta.id),
                name: Some(meta.name.to_string()),
                version: Some(meta.version.to_string()),
                description: Some(meta.description.to_string()),
                backends: meta.backends.iter().map(|b| b.to_string()).collect(),
                params: params_listing(meta),
                error,
                sha256: Some(module.sha256.clone()),
                servers: Vec::new(),
            }
        }
        FileState::Rejected { id, reason } => ModuleListing {
            file: file.to_owned(),
            status: "rejected",
            id: *id,
            name: None,
            version: None,
            description: None,
            backends: Vec::new(),
            params: Vec::new(),
            error: Some(reason.clone()),
            sha256: None,
            servers: Vec::new(),
        },
    }
}

fn params_listing(meta: &Metadata) -> Vec<ParamListing> {
    meta.params
        .iter()
        .map(|p| {
            let mut row = ParamListing {
                name: p.name.to_string(),
                description: p.description.to_string(),
                required: p.required,
                kind: "integer",
                min: None,
                max: None,
                choices: None,
                pattern: None,
                default: None,
            };
            match &p.kind {
                ParamKind::Integer { min, max, default } => {
                    (row.min, row.max) = (Some(*min), Some(*max));
                    row.default = default.into_option().map(serde_json::Value::from);
                }
                ParamKind::Choice { choices, default } => {
                    row.kind = "choice";
                    row.choices = Some(choices.iter().map(|c| c.to_string()).collect());
                    row.default = default.as_ref().into_option().map(|d| d.as_str().into());
                }
                ParamKind::Text { pattern, default, .. } => {
                    row.kind = "text";
                    row.pattern = Some(pattern.to_string());
                    row.default = default.as_ref().into_option().map(|d| d.as_str().into());
                }
            }
            row
        })
        .collect()
}
