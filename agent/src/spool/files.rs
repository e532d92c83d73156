//! Safe file handling in a directory every user can write to.
//!
//! The spool directory is shared like /tmp (mode 1777), so another local user can plant a file, a symlink or a hard
//! link under one of our names before we first use it. Every file is therefore opened with `O_NOFOLLOW`, checked
//! with `fstat` (regular, owned by us, one link) and kept at mode 0600; temporary files get unguessable names and
//! `O_EXCL`. A planted file is refused ([`Error::ForeignFile`]); root, who can, removes it and starts afresh.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::identity::effective_uid;

/// How a private file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only; a missing file is `Ok(None)`.
    Read,
    /// Read and write, created when missing (lock files).
    ReadWriteCreate,
    /// Append, created when missing (spool and log).
    AppendCreate,
}

/// Creates the spool directory when missing (mode 1777, like /tmp) and checks it is usable.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let not_writable = |source| Error::SpoolNotWritable { path: dir.to_owned(), source };
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(not_writable)?;
            }
            match fs::create_dir(dir) {
                Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o1777)).map_err(not_writable)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(not_writable(e)),
            }
            fs::metadata(dir).map_err(not_writable)?
        }
        Err(e) => return Err(not_writable(e)),
    };
    if !meta.is_dir() {
        return Err(not_writable(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(Error::InsecureSpoolDir { path: dir.to_owned() });
    }
    let c_dir = c_path(dir)?;
    // SAFETY: c_dir is a valid NUL-terminated path; access only reads it.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(not_writable(io::Error::last_os_error()));
    }
    Ok(())
}

/// Opens one of our own files in the shared directory, refusing anything another user planted.
pub(crate) fn open_private(path: &Path, access: Access) -> Result<Option<File>> {
    match try_open(path, access, false) {
        Err(Error::ForeignFile { .. }) if effective_uid() == 0 => {
            // Root may delete anything: drop the planted file (unlinking a symlink does not touch its target) and
            // create ours in its place, exclusively so a racing plant fails instead of being used.
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove planted file", path, e)),
            }
            try_open(path, access, true)
        }
        other => other,
    }
}

fn try_open(path: &Path, access: Access, exclusive: bool) -> Result<Option<File>> {
    let mut options = OpenOptions::new();
    match access {
        Access::Read => options.read(true),
        Access::ReadWriteCreate => options.read(true).write(true).create(true),
        Access::AppendCreate => options.read(true).append(true).create(true),
    };
    if exclusive && access != Access::Read {
        options.create_new(true);
    }
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && access == Access::Read => return Ok(None),
        // ELOOP: a symlink under our name. EACCES with protected_regular: someone else's file under our name.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.kind() == io::ErrorKind::PermissionDenied => {
            return match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() || meta.uid() != effective_uid() => {
                    Err(Error::ForeignFile { path: path.to_owned(), owner: meta.uid() })
                }
                _ => Err(Error::io("open", path, e)),
            };
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() || meta.uid() != effective_uid() || meta.nlink() != 1 {
        return Err(Error::ForeignFile { path: path.to_owned(), owner: meta.uid() });
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| Error::io("chmod", path, e))?;
    }
    Ok(Some(file))
}

/// Creates `.<stem>.<pid>.<random>.tmp` next to `target`, exclusively, mode 0600.
pub(crate) fn create_temp(target: &Path) -> Result<(File, PathBuf)> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let stem = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let path = dir.join(format!(".{stem}.{}.{}.tmp", std::process::id(), random_hex(8)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    Ok((file, path))
}

/// `bytes` random bytes from the kernel, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // No getrandom (very old kernel): /dev/urandom, and as a last resort time and pid, which is still
            // unique enough for a stream id or a temporary name.
            if read_urandom(&mut buf).is_ok() {
                break;
            }
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mix = seed.as_nanos() ^ (u128::from(std::process::id()) << 64);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (mix >> ((i % 16) * 8)) as u8;
            }
            break;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_urandom(buf: &mut [u8]) -> io::Result<()> {
    use std::io::Read;
    File::open("/dev/urandom")?.read_exact(buf)
}

/// An flock held on an open file; released when dropped (the descriptor is closed).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes an exclusive or shared flock on `path`, waiting at most `max_wait` (never forever: a stuck holder must not
/// hang the prompt).
pub(crate) fn lock(path: &Path, exclusive: bool, max_wait: Duration) -> Result<Lock> {
    let file = open_lock_file(path)?;
    let operation = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match flock(&file, operation | libc::LOCK_NB) {
            Ok(true) => return Ok(Lock { _file: file }),
            Ok(false) if start.elapsed() < max_wait => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Ok(false) => {
                return Err(Error::SpoolBusy { path: path.to_owned(), waited_ms: start.elapsed().as_millis() as u64 })
            }
            Err(e) => return Err(Error::io("flock", path, e)),
        }
    }
}

/// Takes an exclusive flock on `path` without waiting: `None` when another process holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<Lock>> {
    let file = open_lock_file(path)?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(true) => Ok(Some(Lock { _file: file })),
        Ok(false) => Ok(None),
        Err(e) => Err(Error::io("flock", path, e)),
    }
}

/// Takes an exclusive flock on `path`, waiting as long as it takes.
pub(crate) fn lock_blocking(path: &Path) -> Result<Lock> {
    let file = open_lock_file(path)?;
    loop {
        match flock(&file, libc::LOCK_EX) {
            Ok(_) => return Ok(Lock { _file: file }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("flock", path, e)),
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    // ReadWriteCreate always yields a file or an error; `None` only comes from Access::Read.
    open_private(path, Access::ReadWriteCreate)?
        .ok_or_else(|| Error::io("open", path, io::Error::from(io::ErrorKind::NotFound)))
}

/// `Ok(false)` when the lock is held elsewhere (only with `LOCK_NB`).
fn flock(file: &File, operation: libc::c_int) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the lifetime of `file`.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

fn c_path(path: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::io("use", path, io::Error::from(io::ErrorKind::InvalidInput)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_planted_files_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let planted = dir.path().join("0.spool");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let result = open_private(&planted, Access::AppendCreate);
        if effective_uid() == 0 {
            // Root removes the symlink and creates its own file.
            let file = result.unwrap().unwrap();
            assert!(file.metadata().unwrap().is_file());
            assert!(!fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
        } else {
            assert!(matches!(result, Err(Error::ForeignFile { .. })));
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn hard_links_are_refused_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let planted = dir.path().join("0.state");
        fs::hard_link(&victim, &planted).unwrap();
        let _ = open_private(&planted, Access::AppendCreate);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn created_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.spool");
        open_private(&path, Access::AppendCreate).unwrap().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(open_private(&dir.path().join("missing"), Access::Read).unwrap().is_none());
    }

    #[test]
    fn created_spool_dir_is_sticky_and_world_writable() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("a/b");
        ensure_dir(&spool).unwrap();
        assert_eq!(fs::metadata(&spool).unwrap().mode() & 0o7777, 0o1777);
        let loose = dir.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(ensure_dir(&loose), Err(Error::InsecureSpoolDir { .. })));
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(ensure_dir(&file.join("sub")), Err(Error::SpoolNotWritable { .. })));
    }

    #[test]
    fn random_hex_has_the_right_length() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(16));
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let held = try_lock(&path).unwrap();
        assert!(held.is_some());
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
    }
}
