//! File copy over an exec channel: the bytes go on the channel's stdin (never in a command line) into a temporary
//! name in the destination's directory; only a file of exactly the expected size gets its mode and is renamed
//! over the destination, so a reader never sees half a file and a lost connection never installs one.
//!
//! Why not SFTP: it needs the sftp subsystem enabled on every host, and `rename` over an existing file is an
//! OpenSSH extension; `cat`, `wc`, `chmod` and `mv` are on every POSIX host.

use super::quote::quote;

/// The remote command that installs `size` bytes from stdin as `dest` with `mode`.
pub fn install_command(dest: &str, size: usize, mode: u32, nonce: u64) -> Result<String, String> {
    if dest.is_empty() || dest.ends_with('/') {
        return Err(format!("{dest:?} is not a file path"));
    }
    if dest.contains('\0') {
        return Err("the destination contains a NUL byte".to_owned());
    }
    let (dir, name) = match dest.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), dest),
    };
    let tmp = quote(&format!("{dir}.{name}.omserver-{nonce:016x}.tmp"));
    let final_name = quote(dest);
    let mode = mode & 0o7777;
    // umask 077: the temporary file is private until chmod gives it the requested mode.
    Ok(format!(
        "umask 077 && cat > {tmp} && [ \"$(wc -c < {tmp})\" -eq {size} ] && chmod {mode:04o} {tmp} && \
         mv -f {tmp} {final_name} || {{ rc=$?; rm -f {tmp}; echo {msg} >&2; exit $rc; }}",
        msg = quote(&format!("omserver: could not install {dest}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, os::unix::fs::PermissionsExt, process::Stdio};

    fn install_locally(dest: &str, data: &[u8], claimed: usize, mode: u32) -> std::process::Output {
        let command = install_command(dest, claimed, mode, 7).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap()
    }

    /// The command itself, run by a real local shell: exact bytes, the mode, no temporary file left.
    #[test]
    fn installs_exact_bytes_and_mode_through_a_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("it's a $(file)");
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let out = install_locally(dest.to_str().unwrap(), &data, data.len(), 0o640);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is gone");
    }

    #[test]
    fn a_short_stream_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("target");
        std::fs::write(&dest, b"old").unwrap();
        let out = install_locally(dest.to_str().unwrap(), b"half", 8, 0o644);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("could not install"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is removed");
    }

    #[test]
    fn rejects_paths_that_name_no_file() {
        assert!(install_command("/etc/", 1, 0o644, 1).is_err());
        assert!(install_command("", 1, 0o644, 1).is_err());
        assert!(install_command("relative.conf", 1, 0o644, 1).unwrap().contains("'.relative.conf.omserver-"));
    }
}
