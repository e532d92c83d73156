//! One call of ansible's ad-hoc CLI: the private directory it runs in (inventory, variables, config, our callback
//! plugin) and the command line and environment it runs with.
//!
//! **Why the odd shape:** ansible templates (Jinja2) every string it is given — module arguments, inventory
//! variables, extra variables — so an argument `{{ lookup('pipe', 'id') }}` would run on the server. Everything
//! that comes from a request or the inventory is therefore written into files of this directory inside a YAML
//! `!unsafe` mapping (never templated), each string explicitly `!!str` (ansible-core 2.19 re-resolves the scalars
//! under `!unsafe` as if unquoted: `!unsafe "true"` became the boolean), and the module arguments on the command
//! line only refer to those variables.
//!
//! A command runs on the target under `supervise.py` (through the target's `python3`, which ansible needs there
//! anyway): ssh does not stop a remote command when the connection is cut, so that wrapper kills the command's
//! session when the command outlives the command timeout or when the ssh session above it is gone (a cancelled
//! job).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use tokio::process::Command;

use super::super::{config::AnsibleConfig, config::HostKeyPolicy, Host, Limits};

/// The callback plugin, written next to each call's inventory.
const CALLBACK_NAME: &str = "omserver_jsonl";
const CALLBACK_SOURCE: &str = include_str!("omserver_jsonl.py");
const SUPERVISOR_SOURCE: &str = include_str!("supervise.py");

/// Where ansible puts its temporary files on the targets (it creates a private subdirectory per task), instead of
/// `~/.ansible/tmp` in the remote user's home.
const REMOTE_TMP: &str = "/tmp/.omserver-ansible";

/// What one call asks ansible to do on every host.
pub enum Task<'a> {
    /// The `command` module with an argument vector (no shell).
    Command { argv: &'a [String] },
    /// The `copy` module: the server file `source` to `dest`, with `mode`.
    Copy { source: &'a Path, dest: &'a str, mode: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot prepare ansible's working directory under {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

/// A prepared call: its private directory (removed when this is dropped, also on cancellation) and the command.
pub struct Invocation {
    _dir: tempfile::TempDir,
    pub command: Command,
}

/// The inventory alias of the host at `index`. Ansible parses host names (ranges like `web[1:3]`, `name:port`),
/// so the inventory uses these and the backend maps them back.
pub fn alias(index: usize) -> String {
    format!("h{index}")
}

/// The index of the host an alias names.
pub fn index_of(alias: &str) -> Option<usize> {
    alias.strip_prefix('h')?.parse().ok()
}

/// Writes the call's directory under `state_dir` and builds the `ansible` command for `task` on `hosts`.
pub fn prepare(
    config: &AnsibleConfig,
    limits: &Limits,
    state_dir: &Path,
    hosts: &[Host],
    task: &Task<'_>,
) -> Result<Invocation, PrepareError> {
    let ssh_args = ssh_args(config)?;
    let io = |dir: &Path| {
        let dir = dir.to_path_buf();
        move |source| PrepareError::Io { dir, source }
    };
    let home = state_dir.join("home");
    let calls = state_dir.join("calls");
    for dir in [&home, &calls, &state_dir.join("cp")] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    // 0700, only this server's user can read the argument vector in it.
    let dir = tempfile::Builder::new().prefix("call-").tempdir_in(&calls).map_err(io(&calls))?;
    let path = dir.path();
    let write = |name: &str, text: &str| {
        let file = path.join(name);
        std::fs::write(&file, text).map_err(io(&file))
    };
    std::fs::create_dir(path.join("callbacks")).map_err(io(path))?;
    std::fs::create_dir(path.join("tmp")).map_err(io(path))?;
    write(&format!("callbacks/{CALLBACK_NAME}.py"), CALLBACK_SOURCE)?;
    write("ansible.cfg", "# Written by omserver; every setting it needs is in the environment.\n[defaults]\n")?;
    write("inventory.yml", &inventory(config, hosts))?;
    let (module, args, vars) = match task {
        Task::Command { argv } => (
            "command",
            // The command module would otherwise expand `$VAR` and `~` in every argument (os.path.expandvars)
            // and strip trailing newlines from the output.
            r#"{"argv": "{{ omserver.argv }}", "expand_argument_vars": false, "strip_empty_ends": false}"#.to_owned(),
            format!("omserver: !unsafe {{argv: {}}}\n", str_list(&supervised(argv, limits))),
        ),
        Task::Copy { source, dest, mode } => {
            let source = source
                .to_str()
                .ok_or_else(|| PrepareError::Config(format!("the source path {} is not UTF-8", source.display())))?;
            (
                "copy",
                // The mode is ours (a number), so it may stand in the arguments; the paths may not.
                format!(
                    r#"{{"src": "{{{{ omserver.src }}}}", "dest": "{{{{ omserver.dest }}}}", "mode": "{mode:04o}"}}"#
                ),
                format!("omserver: !unsafe {{src: {}, dest: {}}}\n", yaml_str(source), yaml_str(dest)),
            )
        }
    };
    write("vars.yml", &vars)?;

    let forks = usize::try_from(config.forks).unwrap_or(usize::MAX).clamp(1, hosts.len().max(1));
    let mut command = Command::new(&config.executable);
    command
        .arg("all")
        .arg("-i")
        .arg(path.join("inventory.yml"))
        .arg("-e")
        .arg(format!("@{}", path.join("vars.yml").display()))
        .args(["-m", module, "-a", &args])
        .arg("-f")
        .arg(forks.to_string())
        .arg("--private-key")
        .arg(&config.identity_file)
        .arg("-T")
        .arg(config.connect_timeout_secs.max(1).to_string())
        .current_dir(path)
        .env_clear()
        .envs(environment(limits, state_dir, path, &ssh_args));
    Ok(Invocation { _dir: dir, command })
}

/// The whole environment of the ansible process: nothing inherited but PATH, nothing written outside the state
/// directory, our callback on stdout.
fn environment(limits: &Limits, state_dir: &Path, call_dir: &Path, ssh_args: &str) -> Vec<(String, String)> {
    let path_of = |p: &Path| p.display().to_string();
    // A backstop only: the supervisor stops a command at its timeout; this also bounds a copy.
    let task_timeout = limits.command_timeout.as_secs_f64().ceil().max(1.0) as u64 + 30;
    let mut env: Vec<(&str, String)> = vec![
        ("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned())),
        ("HOME", path_of(&state_dir.join("home"))),
        ("LANG", "C.UTF-8".to_owned()),
        ("ANSIBLE_CONFIG", path_of(&call_dir.join("ansible.cfg"))),
        ("ANSIBLE_HOME", path_of(&state_dir.join("home"))),
        ("ANSIBLE_LOCAL_TEMP", path_of(&call_dir.join("tmp"))),
        ("ANSIBLE_REMOTE_TMP", REMOTE_TMP.to_owned()),
        ("ANSIBLE_SSH_CONTROL_PATH_DIR", path_of(&state_dir.join("cp"))),
        ("ANSIBLE_SSH_ARGS", ssh_args.to_owned()),
        ("ANSIBLE_PIPELINING", "True".to_owned()),
        ("ANSIBLE_HOST_KEY_CHECKING", "True".to_owned()),
        ("ANSIBLE_TASK_TIMEOUT", task_timeout.to_string()),
        ("ANSIBLE_CALLBACK_PLUGINS", path_of(&call_dir.join("callbacks"))),
        ("ANSIBLE_STDOUT_CALLBACK", CALLBACK_NAME.to_owned()),
        ("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1".to_owned()),
        ("ANSIBLE_INVENTORY_ENABLED", "yaml".to_owned()),
        ("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True".to_owned()),
        // The supervisor needs `python3` on the target's PATH anyway; naming it skips interpreter discovery, one
        // ssh connection per host less (50 loopback hosts: 23 s instead of 29 s here).
        ("ANSIBLE_PYTHON_INTERPRETER", "python3".to_owned()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False".to_owned()),
        ("ANSIBLE_NOCOLOR", "1".to_owned()),
        ("ANSIBLE_FORCE_COLOR", "0".to_owned()),
        ("ANSIBLE_DEPRECATION_WARNINGS", "False".to_owned()),
        ("ANSIBLE_LOCALHOST_WARNING", "False".to_owned()),
        ("OMSERVER_OUTPUT_LIMIT", limits.output_limit_bytes.to_string()),
    ];
    env.sort_by_key(|(k, _)| *k);
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// ssh options for every connection. ansible splits this string like a shell, and OpenSSH splits
/// `UserKnownHostsFile` at whitespace, so the known-hosts path must be plain.
///
/// `ControlMaster=no`: no multiplexing master outlives the call (a persisted master would keep a cancelled
/// command's session alive and is a process outside our group). An ad-hoc call makes one connection per host for
/// a command anyway (pipelining), so nothing is lost.
pub fn ssh_args(config: &AnsibleConfig) -> Result<String, PrepareError> {
    let known_hosts = config.known_hosts_file.to_str().unwrap_or("");
    if known_hosts.is_empty() || known_hosts.chars().any(|c| c.is_whitespace() || "'\"\\%".contains(c)) {
        return Err(PrepareError::Config(format!(
            "known_hosts_file {:?} must be a UTF-8 path without whitespace, quotes, backslashes or %: \
             ssh and ansible split it",
            config.known_hosts_file.display()
        )));
    }
    let policy = match config.host_key_policy {
        HostKeyPolicy::Strict => "yes",
        HostKeyPolicy::AcceptNew => "accept-new",
    };
    let alive = config.connect_timeout_secs.max(1);
    Ok(format!(
        "-o ControlMaster=no -o ControlPath=none -o BatchMode=yes -o IdentitiesOnly=yes \
         -o StrictHostKeyChecking={policy} -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null \
         -o ServerAliveInterval={alive} -o ServerAliveCountMax=3"
    ))
}

/// `python3 -c <supervise.py> TIMEOUT -- argv…`. The script's comments stay out of the remote command line.
fn supervised(argv: &[String], limits: &Limits) -> Vec<String> {
    let script: String = SUPERVISOR_SOURCE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let timeout = limits.command_timeout.as_secs_f64().max(0.001);
    let mut all = vec!["python3".to_owned(), "-c".to_owned(), script, format!("{timeout}"), "--".to_owned()];
    all.extend(argv.iter().cloned());
    all
}

/// The YAML inventory: every host under its alias, its connection values as never-templated strings.
fn inventory(config: &AnsibleConfig, hosts: &[Host]) -> String {
    let mut text = String::from("all:\n  hosts:\n");
    for (i, host) in hosts.iter().enumerate() {
        let port = host.port.unwrap_or(config.port);
        let user = host.user.as_deref().unwrap_or(&config.user);
        // Infallible: writing to a String.
        let _ = writeln!(
            text,
            "    {}: !unsafe {{ansible_host: {}, ansible_port: {port}, ansible_user: {}, omserver_name: {}}}",
            alias(i),
            yaml_str(&host.address),
            yaml_str(user),
            yaml_str(&host.name),
        );
    }
    text
}

fn str_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| yaml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// `!!str "…"`: a YAML double-quoted string that stays a string. Everything outside YAML's printable set (and
/// the quote, the backslash) is escaped, so any Rust string round-trips exactly.
pub fn yaml_str(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 12);
    out.push_str("!!str \"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'.. => out.push(c),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_strings_escape_what_yaml_would_not_keep() {
        assert_eq!(yaml_str("a \"b\" \\ {{ x }}"), r#"!!str "a \"b\" \\ {{ x }}""#);
        assert_eq!(yaml_str("l1\nl2\t\u{7f}\u{85}\u{feff}é"), r#"!!str "l1\u000al2\u0009\u007f\u0085\ufeffé""#);
    }

    #[test]
    fn aliases_map_back_to_indexes() {
        assert_eq!(index_of(&alias(17)), Some(17));
        assert_eq!(index_of("web1"), None);
    }

    #[test]
    fn a_known_hosts_path_ssh_would_split_is_refused() {
        let mut config = AnsibleConfig { known_hosts_file: "/etc/om server/kh".into(), ..AnsibleConfig::default() };
        assert!(ssh_args(&config).is_err());
        config.known_hosts_file = "/etc/omserver/known_hosts".into();
        let args = ssh_args(&config).unwrap();
        assert!(args.contains("StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/omserver/known_hosts"), "{args}");
    }

    #[test]
    fn the_inventory_holds_only_unsafe_values_under_aliases() {
        let hosts = [Host { name: "web[1:3]".into(), address: "127.0.0.2".into(), port: Some(2222), user: None }];
        let text = inventory(&AnsibleConfig::default(), &hosts);
        assert_eq!(
            text,
            "all:\n  hosts:\n    h0: !unsafe {ansible_host: !!str \"127.0.0.2\", ansible_port: 2222, \
             ansible_user: !!str \"root\", omserver_name: !!str \"web[1:3]\"}\n"
        );
    }
}
