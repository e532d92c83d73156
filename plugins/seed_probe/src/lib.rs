//! For the seed modules that read something whose place differs between distributions (the system log is
//! `/var/log/messages` on Red Hat, `/var/log/syslog` or only the journal on Debian; `lsmod` may be missing): the
//! first of a short list of sources that exists **on each host**, checked through the job's backend (`find`), then that
//! source's command on the hosts that have it. Each host's output begins with a line naming the source used.
//!
//! Not part of the plugin SDK: a helper these modules link statically, so that a module built elsewhere never
//! depends on it.

use omserver_plugin_api::prelude::*;

/// One way to read the thing: the path whose presence on a host selects it, and the command to run then.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: String,
    pub argv: Vec<String>,
}

impl Source {
    pub fn new<S: Into<String>>(path: &str, argv: impl IntoIterator<Item = S>) -> Source {
        Source { path: path.to_owned(), argv: argv.into_iter().map(Into::into).collect() }
    }
}

/// The line put before a host's output: which source it came from.
pub fn header(source: &Source) -> String {
    format!("==> {} <==\n", source.argv.join(" "))
}

/// The probe: `find -H DIR… -maxdepth 1 ( -path P1 -o -path P2 … ) -print` over the candidates' directories,
/// which every host has, so that it exits 0 and prints the candidates present (`ls -d P…` would exit 2 whenever
/// one is missing, and the job's live view and the CLI would show a failure before the real result). `-H` follows
/// a directory that is a symlink (`/bin` → `usr/bin` on merged-/usr systems). A directory whose entries vanish
/// while `find` reads it (`/proc` under some sandboxes) can still make it exit 1: what it printed counts all the same.
fn probe_argv(sources: &[Source]) -> Vec<String> {
    let mut dirs: Vec<&str> = Vec::new();
    for source in sources {
        let dir = match source.path.rfind('/') {
            Some(0) | None => "/",
            Some(at) => &source.path[..at],
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let mut argv: Vec<String> = vec!["find".into(), "-H".into()];
    argv.extend(dirs.iter().map(|d| (*d).to_owned()));
    argv.extend(["-maxdepth".into(), "1".into(), "(".into()]);
    for (i, source) in sources.iter().enumerate() {
        if i > 0 {
            argv.push("-o".into());
        }
        argv.extend(["-path".into(), source.path.clone()]);
    }
    argv.extend([")".into(), "-print".into()]);
    argv
}

/// Which source each host has: the first of `sources` that the probe printed for it (one backend call for every
/// host). A host whose probe did not run (unreachable, refused) keeps that result, and one with none of the paths
/// gets a failure naming them all.
pub fn choose(ctx: &Context<'_>, hosts: &[Target], sources: &[Source]) -> Vec<Result<usize, HostResult>> {
    let found = ctx.run(hosts, &probe_argv(sources));
    hosts
        .iter()
        .map(|host| {
            let Some(probe) = found.iter().find(|r| r.host == host.name) else {
                return Err(HostResult::failed(&host.name, "the backend gave no result for the probe"));
            };
            if probe.status == HostStatus::Unreachable || probe.rc.is_none() {
                return Err(probe.clone());
            }
            let present: Vec<&str> = probe.stdout.lines().map(str::trim).collect();
            sources.iter().position(|s| present.contains(&s.path.as_str())).ok_or_else(|| {
                let tried: Vec<&str> = sources.iter().map(|s| s.path.as_str()).collect();
                HostResult::failed(&host.name, &format!("none of these exists on this host: {}", tried.join(", ")))
            })
        })
        .collect()
}

/// Runs on each host the first source it has, and returns one result per host in the order of `hosts`, each
/// output headed by [`header`].
pub fn run_first_present(ctx: &Context<'_>, hosts: &[Target], sources: &[Source]) -> Vec<HostResult> {
    let choices = choose(ctx, hosts, sources);
    let mut results: Vec<Option<HostResult>> = vec![None; hosts.len()];
    for (index, source) in sources.iter().enumerate() {
        // The hosts that use this source, run together: one backend call per source, not per host.
        let group: Vec<(usize, Target)> = choices
            .iter()
            .enumerate()
            .filter(|(_, choice)| matches!(choice, Ok(i) if *i == index))
            .map(|(at, _)| (at, hosts[at].clone()))
            .collect();
        if group.is_empty() {
            continue;
        }
        let targets: Vec<Target> = group.iter().map(|(_, t)| t.clone()).collect();
        for mut result in ctx.run(&targets, &source.argv) {
            if let Some((at, _)) = group.iter().find(|(_, t)| t.name == result.host) {
                let mut stdout = header(source);
                stdout.push_str(&result.stdout);
                result.stdout = stdout.into();
                results[*at] = Some(result);
            }
        }
    }
    choices
        .into_iter()
        .zip(results)
        .zip(hosts)
        .map(|((choice, result), host)| match (choice, result) {
            (Err(early), _) => early,
            (Ok(_), Some(result)) => result,
            (Ok(_), None) => HostResult::failed(&host.name, "the backend gave no result"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_looks_in_each_directory_once_for_exactly_the_candidates() {
        let sources = [
            Source::new("/var/log/messages", ["tail"]),
            Source::new("/var/log/syslog", ["tail"]),
            Source::new("/usr/bin/journalctl", ["journalctl"]),
            Source::new("/sys/module", ["ls"]),
        ];
        let argv = probe_argv(&sources).join(" ");
        assert_eq!(
            argv,
            "find -H /var/log /usr/bin /sys -maxdepth 1 ( -path /var/log/messages -o -path /var/log/syslog \
             -o -path /usr/bin/journalctl -o -path /sys/module ) -print"
        );
    }
}
