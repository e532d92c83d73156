//! The execve rules `watch` installs with `manage_rules = true`, and taking exactly them away again.
//!
//! One rule per ABI: `-a always,exit -F arch=<abi> -S execve -S execveat -F auid!=unset -k omaudit-exec`
//! (`auid!=unset` is the kernel's `loginuid_set=1`: only processes of a login session, so daemons and the agent
//! itself, started by systemd with no login uid, are not audited at all). The key marks them as ours: a rule with
//! this key left by an agent that was killed is taken over at the next start and removed at its stop; rules
//! without it are never touched.

use super::netlink::{AuditSocket, Rule, Status};
use super::KernelError;

/// The key (`-k`) of the agent's rules.
pub const RULE_KEY: &str = "omaudit-exec";

const AUDIT_FILTER_EXIT: u32 = 0x04;
const AUDIT_ALWAYS: u32 = 2;
const AUDIT_EQUAL: u32 = 0x4000_0000;
const AUDIT_ARCH: u32 = 11;
const AUDIT_LOGINUID_SET: u32 = 24;
/// `AUDIT_FILTERKEY`: the rule's key, a string field.
pub const AUDIT_FILTERKEY: u32 = 210;

/// The backlog `manage_rules` asks for when the kernel's is smaller (Debian's auditd asks for 8192 too): a burst
/// of execs then waits in the kernel's queue instead of being lost.
pub const BACKLOG_LIMIT: u32 = 8192;

/// Whether a rule field carries a string in the rule's buffer (`<linux/audit.h>`: watch, dir, key, the LSM
/// labels, exe).
pub fn is_string_field(field: u32) -> bool {
    matches!(field, 13..=19 | 105 | 107 | 210 | 112)
}

/// An ABI the kernel audits, with its execve and execveat numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abi {
    /// `AUDIT_ARCH_*`, as the SYSCALL record's `arch=` prints it in hex.
    pub arch: u32,
    /// `execve`'s number in this ABI.
    pub execve: u32,
    /// `execveat`'s number in this ABI.
    pub execveat: u32,
}

/// The ABIs of this machine: the native one and its 32-bit compatibility ABI.
pub fn abis() -> Result<&'static [Abi], KernelError> {
    #[cfg(target_arch = "x86_64")]
    const ABIS: &[Abi] =
        &[Abi { arch: 0xc000_003e, execve: 59, execveat: 322 }, Abi { arch: 0x4000_0003, execve: 11, execveat: 358 }];
    #[cfg(target_arch = "aarch64")]
    const ABIS: &[Abi] =
        &[Abi { arch: 0xc000_00b7, execve: 221, execveat: 281 }, Abi { arch: 0x4000_0028, execve: 11, execveat: 387 }];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const ABIS: &[Abi] = &[];
    if ABIS.is_empty() {
        Err(KernelError::UnsupportedArch(std::env::consts::ARCH))
    } else {
        Ok(ABIS)
    }
}

/// Whether `syscall` in `arch` is an exec.
pub fn is_exec(arch: u32, syscall: u32) -> bool {
    abis().unwrap_or_default().iter().any(|abi| abi.arch == arch && (syscall == abi.execve || syscall == abi.execveat))
}

/// The agent's rule for one ABI.
pub fn exec_rule(abi: &Abi) -> Rule {
    let mut mask = [0u32; 64];
    for nr in [abi.execve, abi.execveat] {
        mask[(nr / 32) as usize] |= 1 << (nr % 32);
    }
    Rule {
        flags: AUDIT_FILTER_EXIT,
        action: AUDIT_ALWAYS,
        mask,
        fields: vec![
            (AUDIT_ARCH, AUDIT_EQUAL, abi.arch),
            (AUDIT_LOGINUID_SET, AUDIT_EQUAL, 1),
            (AUDIT_FILTERKEY, AUDIT_EQUAL, RULE_KEY.len() as u32),
        ],
        buf: RULE_KEY.as_bytes().to_vec(),
    }
}

/// Whether a loaded rule would make the kernel report execs of login sessions (ours, auditd's, anyone's).
pub fn reports_execs(rule: &Rule) -> bool {
    let Ok(abis) = abis() else { return false };
    let arch = rule.fields.iter().find(|f| f.0 == AUDIT_ARCH).map(|f| f.2).unwrap_or(abis[0].arch);
    let bit = |nr: u32| rule.mask.get((nr / 32) as usize).is_some_and(|w| w & (1 << (nr % 32)) != 0);
    rule.flags == AUDIT_FILTER_EXIT
        && rule.action == AUDIT_ALWAYS
        && abis.iter().any(|abi| abi.arch == arch && bit(abi.execve))
}

/// What `manage_rules` changed, to undo exactly that: the rules it added (or took over) and the status fields it
/// raised.
#[derive(Debug)]
pub struct Installed {
    rules: Vec<Rule>,
    enabled_before: Option<u32>,
    backlog_before: Option<u32>,
}

impl Installed {
    /// Enables auditing, raises the backlog, and adds one rule per ABI. On an error, what was done is undone.
    pub fn install(control: &mut AuditSocket) -> Result<Installed, KernelError> {
        let status: Status = control.status()?;
        let mut installed = Installed { rules: Vec::new(), enabled_before: None, backlog_before: None };
        let result = installed.apply(control, status);
        if let Err(err) = result {
            installed.remove(control);
            return Err(err);
        }
        Ok(installed)
    }

    fn apply(&mut self, control: &mut AuditSocket, status: Status) -> Result<(), KernelError> {
        if status.enabled == 2 {
            return Err(KernelError::Locked);
        }
        for abi in abis()? {
            let rule = exec_rule(abi);
            match control.add_rule(&rule) {
                // Ours by its key: left by an agent that did not stop cleanly.
                Ok(()) | Err(KernelError::RuleExists) => self.rules.push(rule),
                Err(err) => return Err(err),
            }
        }
        if status.backlog_limit < BACKLOG_LIMIT {
            control.set_backlog_limit(BACKLOG_LIMIT)?;
            self.backlog_before = Some(status.backlog_limit);
        }
        if status.enabled == 0 {
            control.set_enabled(1)?;
            self.enabled_before = Some(0);
        }
        Ok(())
    }

    /// The rules added.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Removes the rules and puts back the status fields; every step is tried, and failures are returned.
    pub fn remove(&mut self, control: &mut AuditSocket) -> Vec<KernelError> {
        let mut errors = Vec::new();
        for rule in self.rules.drain(..) {
            if let Err(err) = control.delete_rule(&rule) {
                errors.push(err);
            }
        }
        if let Some(enabled) = self.enabled_before.take() {
            if let Err(err) = control.set_enabled(enabled) {
                errors.push(err);
            }
        }
        if let Some(limit) = self.backlog_before.take() {
            if let Err(err) = control.set_backlog_limit(limit) {
                errors.push(err);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_selects_execve_and_execveat_of_login_sessions() {
        let abi = abis().unwrap()[0];
        let rule = exec_rule(&abi);
        assert!(reports_execs(&rule));
        assert_eq!(rule.key(), Some(RULE_KEY.as_bytes()));
        assert!(is_exec(abi.arch, abi.execve) && is_exec(abi.arch, abi.execveat));
        assert!(!is_exec(abi.arch, abi.execve + 1));
        let mut other = rule.clone();
        other.mask = [0; 64];
        assert!(!reports_execs(&other));
    }
}
