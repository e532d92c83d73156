//! Kernel-level command capture: `omaudit-agent watch`.
//!
//! bash's history only holds what bash chose to remember; the kernel audits every `execve`. This module reads the
//! kernel's audit records from the multicast group (so auditd, where one runs, keeps its own stream), reassembles
//! each exec from its records, and spools it as an event with `source = "execve"`, delivered like a history event.
//!
//! - [`netlink`]: the `NETLINK_AUDIT` socket: status, rules, records.
//! - [`rules`]: the agent's execve rules (`manage_rules`), installed at start and removed exactly at stop.
//! - [`record`]: one record's text and values (quoted or hex). No I/O.
//! - [`exec`]: reassembly by serial (bounded), the exec → event conversion, the pasteable command line. No I/O.
//! - [`watch`]: the running watcher (reader thread, assembler + spool writer, delivery thread), losses as gaps,
//!   and `watch --check`.

pub mod exec;
pub mod netlink;
pub mod record;
pub mod rules;
pub mod watch;

use std::io;

/// Everything that can go wrong between the agent and the kernel's audit subsystem.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The audit netlink socket could not be opened or used (no audit in this kernel: `EPROTONOSUPPORT`).
    #[error("cannot {0} the kernel's audit socket: {1}")]
    Socket(&'static str, #[source] io::Error),
    /// Joining the multicast group failed (`EPERM`: no `CAP_AUDIT_READ`).
    #[error("cannot read the kernel's audit records (multicast group; needs root or CAP_AUDIT_READ): {0}")]
    Multicast(#[source] io::Error),
    /// The kernel refused or did not answer a request (`EPERM`: no `CAP_AUDIT_CONTROL`).
    #[error("cannot {what}: {source}")]
    Request {
        /// What was asked.
        what: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The same rule is already loaded.
    #[error("the audit rule is already loaded")]
    RuleExists,
    /// Auditing is locked (`enabled = 2`, `auditctl -e 2`): rules cannot change until reboot.
    #[error(
        "the kernel's audit configuration is locked (enabled=2): load the execve rule with auditd's rules instead"
    )]
    Locked,
    /// No execve syscall numbers are known for this CPU.
    #[error("execve rules are not known for the {0} architecture")]
    UnsupportedArch(&'static str),
}
