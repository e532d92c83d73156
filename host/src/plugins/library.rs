//! One library file: checked before any worker sees it, and its metadata checked after the worker read it.

use std::{fs, path::Path, sync::Arc};

use omserver_plugin_api::{Metadata, ParamKind};
use sha2::{Digest, Sha256};

/// Why a file was not loaded. The text is shown to operators in `GET /api/modules`.
#[derive(Debug, thiserror::Error)]
pub enum RejectReason {
    #[error("cannot read the file: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a loadable shared library: {0}")]
    NotElf(String),
    #[error("writable by group or others (mode {0:o}): only the server's owner may write modules")]
    Writable(u32),
    /// The probe worker refused the library (abi_stable's version and layout checks, the metadata call) or
    /// crashed, exited or hung loading it.
    #[error("{0}")]
    Probe(String),
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    #[error("file name says module {named} but the library declares {declared}")]
    IdMismatch { named: u32, declared: u32 },
    #[error("module {id} is already served by {by}")]
    Duplicate { id: u32, by: String },
}

/// A library that a probe worker loaded and described. The server keeps its bytes, not a mapping: holding an
/// `Arc<LoadedModule>` pins a module version for a running job, whose worker is given exactly these bytes even
/// if the file in plugins.d has been replaced since.
pub struct LoadedModule {
    pub meta: Metadata,
    /// The name in plugins.d it was read from.
    pub file: String,
    pub sha256: String,
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule").field("id", &self.meta.id).field("file", &self.file).finish_non_exhaustive()
    }
}

/// Reads `path` and checks it is a complete shared object that only its owner may write; returns the bytes and
/// their SHA-256. A half-written file is refused here, before any worker tries to map it. The bytes come shared
/// (the copy into the `Arc` is made here, on the reading thread, which frees the read buffer at once).
pub fn read_checked(path: &Path) -> Result<(Arc<[u8]>, String), RejectReason> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(RejectReason::Writable(mode & 0o777));
    }
    let bytes = fs::read(path)?;
    check_elf(&bytes).map_err(RejectReason::NotElf)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok((bytes.into(), sha256))
}

/// Checks what the worker said the library is, and that it matches its file name. The worker's answer is not
/// trusted: a hostile library can claim anything, so every rule the API relies on is checked here.
pub fn check_metadata(meta: &Metadata, file: &str) -> Result<(), RejectReason> {
    validate_metadata(meta).map_err(RejectReason::InvalidMetadata)?;
    if let Some(named) = id_from_file_name(file) {
        if named != meta.id {
            return Err(RejectReason::IdMismatch { named, declared: meta.id });
        }
    }
    Ok(())
}

/// `Mid_1003.so` → 1003. Other names carry no id.
pub fn id_from_file_name(file: &str) -> Option<u32> {
    file.strip_prefix("Mid_")?.strip_suffix(".so")?.parse().ok()
}

fn validate_metadata(meta: &Metadata) -> Result<(), String> {
    if meta.id == 0 {
        return Err("module id 0 is not valid".into());
    }
    if meta.name.trim().is_empty() {
        return Err("the module has no name".into());
    }
    // What a worker says is shown in every listing: a hostile library must not fill it.
    let too_long = |what: &str, text: &str, max: usize| {
        (text.len() > max).then(|| format!("the module's {what} is longer than {max} bytes"))
    };
    if let Some(problem) = too_long("name", &meta.name, 200)
        .or_else(|| too_long("version", &meta.version, 64))
        .or_else(|| too_long("description", &meta.description, 4000))
    {
        return Err(problem);
    }
    if meta.params.len() > 64 || meta.backends.len() > 16 {
        return Err("the module declares more than 64 parameters or 16 backends".into());
    }
    let mut seen = std::collections::HashSet::new();
    for p in meta.params.iter() {
        let name = p.name.as_str();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("parameter name {name:?} must be letters, digits and _"));
        }
        if !seen.insert(name) {
            return Err(format!("parameter {name} is declared twice"));
        }
        match &p.kind {
            ParamKind::Integer { min, max, default } => {
                if min > max {
                    return Err(format!("parameter {name}: min {min} is above max {max}"));
                }
                if let Some(d) = default.as_ref().into_option() {
                    if d < min || d > max {
                        return Err(format!("parameter {name}: default {d} is outside {min}..={max}"));
                    }
                }
            }
            ParamKind::Choice { choices, default } => {
                if choices.is_empty() {
                    return Err(format!("parameter {name} has no choices"));
                }
                if let Some(d) = default.as_ref().into_option() {
                    if !choices.contains(d) {
                        return Err(format!("parameter {name}: default {d} is not one of its choices"));
                    }
                }
            }
            ParamKind::Text { pattern, .. } => {
                regex::Regex::new(pattern).map_err(|e| format!("parameter {name}: bad pattern: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Checks that `bytes` is a complete ELF shared object for this machine.
///
/// Loading a truncated library can fault inside `dlopen` (segments mapped past the end of the file), so a file that
/// is still being written must be recognised before it is loaded: every program segment and the section header
/// table (which linkers put at the very end) must lie inside the file.
pub fn check_elf(bytes: &[u8]) -> Result<(), String> {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("no ELF header".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u64_at = |o: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?)) };
    if u16_at(16) != 3 {
        return Err("not a shared object (ELF type is not DYN)".into());
    }
    let machine = u16_at(18);
    let expected = if cfg!(target_arch = "aarch64") { EM_AARCH64 } else { EM_X86_64 };
    if machine != expected {
        return Err(format!("built for another CPU (ELF machine {machine})"));
    }
    let len = bytes.len() as u64;
    let truncated = || "the file is incomplete (truncated or still being written)".to_owned();
    let (phoff, shoff) = (u64_at(0x20).ok_or_else(truncated)?, u64_at(0x28).ok_or_else(truncated)?);
    let (phentsize, phnum) = (u64::from(u16_at(0x36)), u64::from(u16_at(0x38)));
    let (shentsize, shnum) = (u64::from(u16_at(0x3A)), u64::from(u16_at(0x3C)));
    if phentsize < 56 || phoff.saturating_add(phentsize.saturating_mul(phnum)) > len {
        return Err(truncated());
    }
    if shoff.saturating_add(shentsize.saturating_mul(shnum)) > len {
        return Err(truncated());
    }
    for i in 0..phnum {
        let base = usize::try_from(phoff + i * phentsize).map_err(|_| truncated())?;
        let p_type = u32::from_le_bytes([bytes[base], bytes[base + 1], bytes[base + 2], bytes[base + 3]]);
        let offset = u64_at(base + 8).ok_or_else(truncated)?;
        let filesz = u64_at(base + 0x20).ok_or_else(truncated)?;
        if p_type == 1 && offset.saturating_add(filesz) > len {
            return Err(truncated());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_library() -> Vec<u8> {
        // Any shared object of this machine will do: the C library every Rust binary links.
        let candidates = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib/libc.so.6"];
        candidates.iter().find_map(|p| fs::read(p).ok()).expect("a libc.so.6 on this machine")
    }

    #[test]
    fn a_complete_library_passes_and_every_truncation_fails() {
        let lib = own_library();
        check_elf(&lib).expect("libc is a complete shared object");
        for cut in [10, 63, 64, 200, lib.len() / 3, lib.len() / 2, lib.len() - 1] {
            assert!(check_elf(&lib[..cut]).is_err(), "cut at {cut} of {} must be refused", lib.len());
        }
    }

    #[test]
    fn garbage_is_not_elf() {
        assert_eq!(check_elf(b"hello world, not a library at all").unwrap_err(), "no ELF header");
        let mut header = own_library()[..64].to_vec();
        header[16] = 2; // ET_EXEC
        assert!(check_elf(&header).unwrap_err().contains("not a shared object"));
    }

    #[test]
    fn ids_come_from_mid_names_only() {
        assert_eq!(id_from_file_name("Mid_1003.so"), Some(1003));
        assert_eq!(id_from_file_name("Mid_x.so"), None);
        assert_eq!(id_from_file_name("custom.so"), None);
    }
}
