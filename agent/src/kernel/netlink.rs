//! A raw `NETLINK_AUDIT` socket: the kernel's audit status, its rules, and the multicast stream of records.
//!
//! Two kinds of socket. A *control* socket (unicast, any port id) asks the kernel for its status and adds, lists
//! and deletes rules; it needs `CAP_AUDIT_CONTROL`. A *reader* socket joins the multicast group
//! `AUDIT_NLGRP_READLOG` (needs `CAP_AUDIT_READ`) and receives a copy of every record; the unicast stream stays
//! with auditd when one runs, so both coexist. libc only: the protocol is a header, a few request types and one
//! rule structure (`struct audit_rule_data` in `<linux/audit.h>`), less code than adapting a crate's types.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::KernelError;

/// Netlink protocol number of the audit subsystem.
const NETLINK_AUDIT: libc::c_int = 9;
/// The read-only multicast group (bit mask for `bind`: group 1 → bit 0).
const AUDIT_NLGRP_READLOG: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_ADD_RULE: u16 = 1011;
const AUDIT_DEL_RULE: u16 = 1012;
const AUDIT_LIST_RULES: u16 = 1013;

const AUDIT_STATUS_ENABLED: u32 = 0x0001;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x0010;

/// `AUDIT_BITMASK_SIZE` and `AUDIT_MAX_FIELDS`.
const BITMASK_WORDS: usize = 64;
const MAX_FIELDS: usize = 64;
/// `struct audit_rule_data` without its trailing buffer.
const RULE_FIXED_LEN: usize = 4 * (3 + BITMASK_WORDS + 3 * MAX_FIELDS + 1);

/// The kernel's audit status (`struct audit_status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// 0 off, 1 on, 2 on and locked (rules and this flag cannot change until reboot).
    pub enabled: u32,
    /// What happens on a critical error: 0 silent, 1 printk, 2 panic.
    pub failure: u32,
    /// The unicast reader (auditd), 0 when none.
    pub pid: u32,
    /// Messages per second, 0 unlimited.
    pub rate_limit: u32,
    /// Records queued in the kernel before new ones are lost.
    pub backlog_limit: u32,
    /// Records the kernel dropped since boot (backlog full, rate limit, no memory).
    pub lost: u32,
    /// Records queued now.
    pub backlog: u32,
}

/// One audit rule (`struct audit_rule_data`), as sent and as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The filter list: `AUDIT_FILTER_EXIT` (4) for syscall rules.
    pub flags: u32,
    /// `AUDIT_ALWAYS` (2) or `AUDIT_NEVER` (0).
    pub action: u32,
    /// Syscall bit mask, one bit per syscall number of the rule's arch.
    pub mask: [u32; BITMASK_WORDS],
    /// `(field, operator, value)`; string fields (the key) hold their length as value and their bytes in `buf`.
    pub fields: Vec<(u32, u32, u32)>,
    /// The string fields' bytes, in field order.
    pub buf: Vec<u8>,
}

impl Rule {
    /// The kernel's binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RULE_FIXED_LEN + self.buf.len());
        let mut put = |v: u32| out.extend_from_slice(&v.to_ne_bytes());
        put(self.flags);
        put(self.action);
        put(self.fields.len() as u32);
        self.mask.iter().for_each(|&w| put(w));
        (0..MAX_FIELDS).for_each(|i| put(self.fields.get(i).map_or(0, |f| f.0)));
        (0..MAX_FIELDS).for_each(|i| put(self.fields.get(i).map_or(0, |f| f.2)));
        (0..MAX_FIELDS).for_each(|i| put(self.fields.get(i).map_or(0, |f| f.1)));
        put(self.buf.len() as u32);
        out.extend_from_slice(&self.buf);
        out
    }

    /// Parses a listed rule; `None` when the payload is too short for what it claims.
    pub fn decode(data: &[u8]) -> Option<Rule> {
        let word = |i: usize| -> Option<u32> {
            data.get(i * 4..i * 4 + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let count = (word(2)? as usize).min(MAX_FIELDS);
        let mut mask = [0u32; BITMASK_WORDS];
        for (i, w) in mask.iter_mut().enumerate() {
            *w = word(3 + i)?;
        }
        let base = 3 + BITMASK_WORDS;
        let fields = (0..count)
            .map(|i| Some((word(base + i)?, word(base + 2 * MAX_FIELDS + i)?, word(base + MAX_FIELDS + i)?)))
            .collect::<Option<Vec<_>>>()?;
        let buflen = word(base + 3 * MAX_FIELDS)? as usize;
        let buf = data.get(RULE_FIXED_LEN..RULE_FIXED_LEN + buflen)?.to_vec();
        Some(Rule { flags: word(0)?, action: word(1)?, mask, fields, buf })
    }

    /// The rule's key (`-k`), if it has one.
    pub fn key(&self) -> Option<&[u8]> {
        let mut offset = 0usize;
        for &(field, _, value) in &self.fields {
            if super::rules::is_string_field(field) {
                let end = offset + value as usize;
                if field == super::rules::AUDIT_FILTERKEY {
                    return self.buf.get(offset..end);
                }
                offset = end;
            }
        }
        None
    }
}

/// A netlink audit socket (control or reader).
#[derive(Debug)]
pub struct AuditSocket {
    fd: OwnedFd,
    seq: u32,
}

/// What a request waits for besides the kernel's acknowledgement.
enum Want {
    Ack,
    Reply(u16),
    Multi(u16),
}

impl AuditSocket {
    /// A control socket for status and rules. Answers are awaited at most 2 s.
    pub fn control() -> Result<AuditSocket, KernelError> {
        let socket = AuditSocket::open(0)?;
        socket.set_timeout(Duration::from_secs(2)).map_err(|e| KernelError::Socket("set a timeout on", e))?;
        Ok(socket)
    }

    /// A reader on the multicast group, with a receive buffer of `rcvbuf` bytes (forced past the system limit when
    /// root) and a receive timeout of `poll`, so the caller can look at its stop flag.
    pub fn reader(rcvbuf: usize, poll: Duration) -> Result<AuditSocket, KernelError> {
        let socket = AuditSocket::open(AUDIT_NLGRP_READLOG)?;
        let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
        // SO_RCVBUFFORCE ignores rmem_max but needs CAP_NET_ADMIN; fall back to what is allowed.
        if socket.setsockopt(libc::SO_RCVBUFFORCE, size).is_err() {
            let _ = socket.setsockopt(libc::SO_RCVBUF, size);
        }
        socket.set_timeout(poll).map_err(|e| KernelError::Socket("set a timeout on", e))?;
        Ok(socket)
    }

    fn open(groups: u32) -> Result<AuditSocket, KernelError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_AUDIT) };
        if fd < 0 {
            return Err(KernelError::Socket("open", io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is its valid "kernel assigns the port" value.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: addr is a valid sockaddr_nl and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(if groups != 0 { KernelError::Multicast(err) } else { KernelError::Socket("bind", err) });
        }
        Ok(AuditSocket { fd, seq: 0 })
    }

    fn setsockopt(&self, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: value lives across the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &value as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: tv lives across the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives one datagram into `buf` (its length is the most taken). A timeout is `WouldBlock`; a receive
    /// buffer that overflowed since the last call (records lost) is `ENOBUFS`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn send(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<u32, KernelError> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(len + 4);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(align(msg.len()), 0);
        // SAFETY: sockaddr_nl all-zero addresses the kernel (port 0).
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and addr are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(KernelError::Socket("send to", io::Error::last_os_error()));
        }
        Ok(self.seq)
    }

    /// Sends a request and collects its answers. The kernel may send a reply from another thread, so it can come
    /// before or after the acknowledgement: wait for both.
    fn request(
        &mut self,
        what: &'static str,
        ty: u16,
        payload: &[u8],
        want: Want,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        let seq = self.send(ty, NLM_F_ACK, payload)?;
        let mut replies = Vec::new();
        let (mut acked, mut complete) = (false, matches!(want, Want::Ack));
        let mut buf = vec![0u8; 64 * 1024];
        while !(acked && complete) {
            let n = self.recv(&mut buf).map_err(|e| KernelError::Request { what, source: e })?;
            for (msg_ty, msg_seq, payload) in messages(&buf[..n]) {
                if msg_seq != seq {
                    continue;
                }
                match (msg_ty, &want) {
                    (NLMSG_ERROR, _) => {
                        let code = payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code != 0 {
                            return Err(KernelError::Request { what, source: io::Error::from_raw_os_error(-code) });
                        }
                        acked = true;
                    }
                    (NLMSG_DONE, Want::Multi(_)) => complete = true,
                    (t, Want::Reply(r)) if t == *r => {
                        replies.push(payload.to_vec());
                        complete = true;
                    }
                    (t, Want::Multi(r)) if t == *r => replies.push(payload.to_vec()),
                    _ => {}
                }
            }
        }
        Ok(replies)
    }

    /// The kernel's audit status.
    pub fn status(&mut self) -> Result<Status, KernelError> {
        let replies = self.request("read the audit status", AUDIT_GET, &[], Want::Reply(AUDIT_GET))?;
        let data = replies.first().map(Vec::as_slice).unwrap_or_default();
        let word = |i: usize| data.get(i * 4..i * 4 + 4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        Ok(Status {
            enabled: word(1),
            failure: word(2),
            pid: word(3),
            rate_limit: word(4),
            backlog_limit: word(5),
            lost: word(6),
            backlog: word(7),
        })
    }

    fn set(&mut self, what: &'static str, mask: u32, index: usize, value: u32) -> Result<(), KernelError> {
        let mut words = [0u32; 10];
        words[0] = mask;
        words[index] = value;
        let payload: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.request(what, AUDIT_SET, &payload, Want::Ack).map(drop)
    }

    /// Turns auditing on (1) or off (0).
    pub fn set_enabled(&mut self, enabled: u32) -> Result<(), KernelError> {
        self.set("set the audit enabled flag", AUDIT_STATUS_ENABLED, 1, enabled)
    }

    /// Sets how many records the kernel queues before it loses new ones.
    pub fn set_backlog_limit(&mut self, limit: u32) -> Result<(), KernelError> {
        self.set("set the audit backlog limit", AUDIT_STATUS_BACKLOG_LIMIT, 5, limit)
    }

    /// Adds a rule. An identical rule already loaded is `Err(RuleExists)`.
    pub fn add_rule(&mut self, rule: &Rule) -> Result<(), KernelError> {
        match self.request("add an audit rule", AUDIT_ADD_RULE, &rule.encode(), Want::Ack) {
            Err(KernelError::Request { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Err(KernelError::RuleExists)
            }
            other => other.map(drop),
        }
    }

    /// Deletes a rule identical to `rule`.
    pub fn delete_rule(&mut self, rule: &Rule) -> Result<(), KernelError> {
        self.request("delete an audit rule", AUDIT_DEL_RULE, &rule.encode(), Want::Ack).map(drop)
    }

    /// Every loaded rule, in the kernel's order.
    pub fn list_rules(&mut self) -> Result<Vec<Rule>, KernelError> {
        let replies = self.request("list the audit rules", AUDIT_LIST_RULES, &[], Want::Multi(AUDIT_LIST_RULES))?;
        Ok(replies.iter().filter_map(|r| Rule::decode(r)).collect())
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Splits a datagram into `(type, seq, payload)` messages. A header whose length does not fit is taken as
/// covering the rest of the datagram (older kernels set the audit length without the header).
pub fn messages(data: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let end = if len < NLMSG_HDRLEN || len > rest.len() { rest.len() } else { len };
        out.push((ty, seq, &rest[NLMSG_HDRLEN..end]));
        rest = &rest[align(end).min(rest.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_encode_and_decode_alike() {
        let mut mask = [0u32; BITMASK_WORDS];
        mask[1] = 1 << 27;
        let rule = Rule {
            flags: 4,
            action: 2,
            mask,
            fields: vec![(11, 0x4000_0000, 0xc000_003e), (210, 0x4000_0000, 3)],
            buf: b"key".to_vec(),
        };
        let bytes = rule.encode();
        assert_eq!(bytes.len(), RULE_FIXED_LEN + 3);
        let back = Rule::decode(&bytes).unwrap();
        assert_eq!(back, rule);
        assert_eq!(back.key(), Some(&b"key"[..]));
        assert!(Rule::decode(&bytes[..100]).is_none());
    }

    #[test]
    fn datagrams_split_into_messages() {
        let mut data = Vec::new();
        for (ty, body) in [(1300u16, &b"abc"[..]), (1320, &b""[..])] {
            data.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
            data.extend_from_slice(&ty.to_ne_bytes());
            data.extend_from_slice(&[0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
            data.extend_from_slice(body);
            data.resize(align(data.len()), 0);
        }
        let got = messages(&data);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[0].2), (1300, &b"abc"[..]));
        assert_eq!(got[1].0, 1320);
        // A length that does not fit covers the rest.
        let mut bad = data[..20].to_vec();
        bad[0] = 200;
        assert_eq!(messages(&bad)[0].2, &data[16..20]);
    }
}
