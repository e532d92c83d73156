//! The plugin registry: which task modules are available, from which file, and why others are not.
//!
//! The registry is level-triggered: [`Registry::reconcile`] looks at the whole of plugins.d and brings the
//! registry in line with it. The watcher ([`watch`]) only decides *when* to reconcile. That keeps add, replace,
//! remove, half-written files and duplicate ids in one place, and makes a missed or coalesced filesystem event
//! harmless.
//!
//! **Architecture invariant:** this is the only code that loads libraries. Everything else sees a module as an
//! `Arc<LoadedModule>`: a job pins the version it started with, and a replacement affects only later jobs.

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
    /// Every library loaded so far by content hash. Libraries are never unloaded, so loading the same bytes again
    /// would only leak memory; this keeps the growth to one copy per distinct build.
    by_hash: HashMap<String, Arc<LoadedModule>>,
}

/// One row of `GET /api/modules` and `omserver modules`.
#[derive(Debug, Clone, Serialize)]
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
}

#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// What a reconcile pass did, for logs, metrics and the watcher.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub loaded: Vec<String>,
    pub rejected: Vec<String>,
    pub removed: Vec<String>,
    /// Files seen changing right now: reconcile again shortly.
    pub unsettled: bool,
}

pub struct Registry {
    dir: PathBuf,
    cache_dir: PathBuf,
    state: RwLock<State>,
}

impl Registry {
    /// A registry over `dir`, keeping private copies of libraries in `cache_dir`. Call `reconcile` to fill it.
    pub fn new(dir: &Path, cache_dir: &Path) -> Registry {
        Registry { dir: dir.to_owned(), cache_dir: cache_dir.to_owned(), state: RwLock::new(State::default()) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module serving `id`, pinned.
    pub fn get(&self, id: u32) -> Option<Arc<LoadedModule>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let file = state.serving.get(&id)?;
        match &state.files.get(file)?.state {
            FileState::Loaded(module) => Some(module.clone()),
            FileState::Rejected { .. } => None,
        }
    }

    /// Every file in plugins.d with its status, ordered by file name.
    pub fn list(&self) -> Vec<ModuleListing> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.files.iter().map(|(file, entry)| listing(file, &entry.state, &state.serving)).collect()
    }

    /// Brings the registry in line with plugins.d. Blocking (reads and loads libraries): call it off the runtime.
    pub fn reconcile(&self) -> Outcome {
        let mut outcome = Outcome::default();
        let present = match self.scan() {
            Ok(present) => present,
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "cannot read the plugins directory");
                return outcome;
            }
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());

        let gone: Vec<String> = state.files.keys().filter(|f| !present.contains_key(*f)).cloned().collect();
        for file in gone {
            state.files.remove(&file);
            state.serving.retain(|_, f| *f != file);
            tracing::info!(file = %file, "module file removed");
            outcome.removed.push(file);
        }

        let now = SystemTime::now();
        for (file, fingerprint) in present {
            if state.files.get(&file).is_some_and(|e| e.fingerprint == fingerprint) {
                continue;
            }
            if now.duration_since(fingerprint.1).unwrap_or_default() < SETTLE {
                outcome.unsettled = true;
                continue;
            }
            let file_state = self.evaluate(&file, &mut state.by_hash);
            // A changed file gives up its id until it is resolved again below.
            state.serving.retain(|_, f| *f != file);
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
            state.files.insert(file, FileEntry { fingerprint, state: file_state });
        }

        resolve_duplicates(&mut state);
        outcome
    }

    /// The final `*.so` names in the directory with their fingerprints. Temporary and hidden names are skipped:
    /// deployers write those and rename them over.
    fn scan(&self) -> std::io::Result<BTreeMap<String, Fingerprint>> {
        let mut present = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
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

    fn evaluate(&self, file: &str, by_hash: &mut HashMap<String, Arc<LoadedModule>>) -> FileState {
        let path = self.dir.join(file);
        let reject = |reason: RejectReason| FileState::Rejected {
            id: library::id_from_file_name(file),
            reason: reason.to_string(),
        };
        let (bytes, sha256) = match library::read_checked(&path) {
            Ok(read) => read,
            Err(reason) => return reject(reason),
        };
        if let Some(loaded) = by_hash.get(&sha256) {
            if library::id_from_file_name(file).is_none_or(|named| named == loaded.meta.id) {
                let module = LoadedModule {
                    meta: loaded.meta.clone(),
                    lib: loaded.lib,
                    file: file.to_owned(),
                    sha256: sha256.clone(),
                };
                return FileState::Loaded(Arc::new(module));
            }
        }
        match library::load(&bytes, &sha256, file, &self.cache_dir) {
            Ok(module) => {
                let module = Arc::new(module);
                by_hash.insert(sha256, module.clone());
                FileState::Loaded(module)
            }
            Err(reason) => reject(reason),
        }
    }
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
