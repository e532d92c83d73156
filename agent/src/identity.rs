//! Who is at the prompt, and on which terminal.
//!
//! The history line's user name is fixed when the profile is sourced (`whoami` inside HISTTIMEFORMAT), so after a
//! plain `su` it names the wrong person. The agent adds what the kernel knows: the real uid, the login uid (set by
//! pam_loginuid at login and kept across su/sudo), and SUDO_USER. Names come from parsing /etc/passwd: no NSS, so
//! the binary needs no libc name service and never blocks on LDAP at the prompt.

use std::ffi::CStr;
use std::fs;
use std::os::fd::AsRawFd;

/// The login uid of a process that never logged in (daemons, containers without pam_loginuid).
const UNSET_LOGINUID: u32 = u32::MAX; // 4294967295

/// Who and where, for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Real uid of the shell.
    pub uid: u32,
    /// SUDO_USER, else the login uid's name, else the real uid's name.
    pub login_user: String,
    /// `readlink /proc/self/fd/0` when stdin is a terminal, else `""`.
    pub tty: String,
    /// The kernel's audit session id (`/proc/self/sessionid`), set at login with the login uid; `None` when unset.
    pub session: Option<u32>,
}

impl Identity {
    /// Reads the identity of the current process.
    pub fn current() -> Identity {
        let uid = real_uid();
        let sudo_user = std::env::var("SUDO_USER").ok();
        let loginuid = fs::read_to_string("/proc/self/loginuid").ok();
        let login_user = resolve_login_user(sudo_user.as_deref(), loginuid.as_deref(), uid, || {
            fs::read_to_string("/etc/passwd").unwrap_or_default()
        });
        let session = fs::read_to_string("/proc/self/sessionid").ok().and_then(|s| parse_id(&s));
        Identity { uid, login_user, tty: stdin_tty(), session }
    }
}

/// A login uid or session id as /proc and the kernel's audit records print it; the "unset" value is `None`.
pub fn parse_id(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|&id| id != UNSET_LOGINUID)
}

/// The real uid (not the effective one: the spool is per person at the prompt).
pub fn real_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The effective uid, which owns the files we create.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Applies the precedence SUDO_USER > login uid > real uid; `passwd` is read only when a name must be looked up.
pub fn resolve_login_user(
    sudo_user: Option<&str>,
    loginuid: Option<&str>,
    uid: u32,
    passwd: impl FnOnce() -> String,
) -> String {
    if let Some(name) = sudo_user.filter(|s| !s.is_empty()) {
        return name.to_owned();
    }
    let login_uid = loginuid.and_then(|s| s.trim().parse::<u32>().ok()).filter(|&u| u != UNSET_LOGINUID);
    let wanted = login_uid.unwrap_or(uid);
    user_name(&passwd(), wanted).unwrap_or_else(|| wanted.to_string())
}

/// The first /etc/passwd entry with this uid.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let entry_uid = fields.next()?.parse::<u32>().ok()?;
        (entry_uid == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

fn stdin_tty() -> String {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    // SAFETY: isatty only inspects the descriptor number; an invalid one returns 0.
    if unsafe { libc::isatty(fd) } != 1 {
        return String::new();
    }
    match fs::read_link("/proc/self/fd/0") {
        Ok(path) => path.to_string_lossy().into_owned(),
        // /proc not mounted: ask libc instead.
        Err(_) => ttyname(fd).unwrap_or_default(),
    }
}

fn ttyname(fd: i32) -> Option<String> {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: buf is writable for buf.len() bytes; ttyname_r NUL-terminates on success.
    let rc = unsafe { libc::ttyname_r(fd, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated string within its bounds.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                          # comment\n\
                          alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n";

    #[test]
    fn sudo_user_wins() {
        let got = resolve_login_user(Some("bob"), Some("1000"), 0, || panic!("passwd not needed"));
        assert_eq!(got, "bob");
    }

    #[test]
    fn login_uid_names_who_logged_in_after_su() {
        assert_eq!(resolve_login_user(None, Some("1000\n"), 0, || PASSWD.into()), "alice");
        assert_eq!(resolve_login_user(Some(""), Some("1000"), 0, || PASSWD.into()), "alice");
    }

    #[test]
    fn unset_login_uid_falls_back_to_real_uid() {
        assert_eq!(resolve_login_user(None, Some("4294967295"), 1, || PASSWD.into()), "daemon");
        assert_eq!(resolve_login_user(None, None, 0, || PASSWD.into()), "root");
    }

    #[test]
    fn unknown_uid_is_given_as_a_number() {
        assert_eq!(resolve_login_user(None, Some("4242"), 0, || PASSWD.into()), "4242");
        assert_eq!(user_name("garbage\n::\n", 0), None);
    }
}
