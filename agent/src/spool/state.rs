//! The persisted state beside each spool: stream id, next sequence number, counters, pending gaps, de-duplication
//! memory and the last delivery error. Overwritten in place under the spool lock (`Spool::save_state` says why).

use serde::{Deserialize, Serialize};

use crate::event::Gap;
use crate::spool::files::random_hex;

/// How many terminals the de-duplication memory keeps (oldest forgotten first).
const LAST_SEEN_MAX: usize = 64;
/// How many separate gaps are kept; beyond that the newest is merged into the last one of its stream.
const GAPS_MAX: usize = 256;

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// 32 hex chars, chosen when the state is created.
    pub stream: String,
    /// The sequence number the next event gets.
    pub next_seq: u64,
    /// Events in the spool file (exact after every rewrite; may be one too high after a crash mid-append).
    pub spooled: u64,
    /// Events never spooled since the state was created (all reported as gaps).
    #[serde(default)]
    pub lost: u64,
    /// Losses not yet acknowledged by the server.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// Last history line seen per terminal, to skip bash's re-run of PROMPT_COMMAND on an empty Enter.
    #[serde(default)]
    pub last_seen: Vec<LastSeen>,
    /// Why the last delivery attempt failed; cleared by a successful one.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When `last_error` was set (Unix seconds).
    #[serde(default)]
    pub last_error_at: Option<u64>,
    /// When the server last acknowledged a batch (Unix seconds).
    #[serde(default)]
    pub last_delivery_at: Option<u64>,
}

/// The last history line recorded on one terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSeen {
    /// The terminal (`""` when stdin is not one).
    pub tty: String,
    /// bash's history number.
    pub history_id: u64,
    /// FNV-1a of the command: the state file need not hold a second copy of it.
    pub command_hash: u64,
}

impl State {
    /// A fresh state with a new random stream.
    pub fn new() -> State {
        State {
            stream: random_hex(16),
            next_seq: 1,
            spooled: 0,
            lost: 0,
            gaps: Vec::new(),
            last_seen: Vec::new(),
            last_error: None,
            last_error_at: None,
            last_delivery_at: None,
        }
    }

    /// Whether anything waits for the server.
    pub fn pending(&self) -> bool {
        self.spooled > 0 || !self.gaps.is_empty()
    }

    /// True when this terminal's last recorded line is this one (same number, same command); otherwise remembers
    /// it and returns false.
    pub fn check_and_remember(&mut self, tty: &str, history_id: u64, command: &str) -> bool {
        let command_hash = fnv1a(command.as_bytes());
        if let Some(pos) = self.last_seen.iter().position(|s| s.tty == tty) {
            let seen = &self.last_seen[pos];
            if seen.history_id == history_id && seen.command_hash == command_hash {
                return true;
            }
            self.last_seen.remove(pos);
        }
        if self.last_seen.len() >= LAST_SEEN_MAX {
            self.last_seen.remove(0);
        }
        self.last_seen.push(LastSeen { tty: tty.to_owned(), history_id, command_hash });
        false
    }

    /// Takes the next sequence number.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Records that `seq` of the current stream will never be delivered.
    pub fn add_loss(&mut self, seq: u64, reason: &str) {
        self.lost += 1;
        self.add_gap(Gap { stream: self.stream.clone(), from_seq: seq, to_seq: seq, reason: reason.to_owned() });
    }

    /// Adds a gap, extending the previous one when it continues it.
    pub fn add_gap(&mut self, gap: Gap) {
        if let Some(last) = self.gaps.last_mut() {
            if last.stream == gap.stream
                && last.reason == gap.reason
                && last.to_seq.checked_add(1) == Some(gap.from_seq)
            {
                last.to_seq = gap.to_seq;
                return;
            }
        }
        if self.gaps.len() >= GAPS_MAX {
            if let Some(same) = self.gaps.iter_mut().rev().find(|g| g.stream == gap.stream) {
                same.from_seq = same.from_seq.min(gap.from_seq);
                same.to_seq = same.to_seq.max(gap.to_seq);
                same.reason =
                    format!("{} (several gaps merged)", same.reason.trim_end_matches(" (several gaps merged)"));
                return;
            }
        }
        self.gaps.push(gap);
    }

    /// Forgets gaps the server acknowledged. A gap that grew since it was sent keeps its unsent tail.
    pub fn acknowledge_gaps(&mut self, sent: &[Gap]) {
        for done in sent {
            if let Some(pos) = self
                .gaps
                .iter()
                .position(|g| g.stream == done.stream && g.from_seq == done.from_seq && g.reason == done.reason)
            {
                if self.gaps[pos].to_seq > done.to_seq {
                    self.gaps[pos].from_seq = done.to_seq + 1;
                } else {
                    self.gaps.remove(pos);
                }
            }
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_is_per_terminal() {
        let mut state = State::new();
        assert!(!state.check_and_remember("/dev/pts/0", 5, "ls"));
        assert!(state.check_and_remember("/dev/pts/0", 5, "ls"));
        assert!(!state.check_and_remember("/dev/pts/1", 5, "ls"));
        assert!(!state.check_and_remember("/dev/pts/0", 6, "ls"));
        assert!(!state.check_and_remember("/dev/pts/0", 6, "ls -l"));
        assert!(state.check_and_remember("/dev/pts/1", 5, "ls"));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut state = State::new();
        for i in 0..200 {
            state.check_and_remember(&format!("/dev/pts/{i}"), 1, "x");
        }
        assert_eq!(state.last_seen.len(), LAST_SEEN_MAX);
        assert!(state.check_and_remember("/dev/pts/199", 1, "x"));
    }

    #[test]
    fn gaps_merge_and_shrink_on_acknowledgement() {
        let mut state = State::new();
        state.add_loss(18, "spool full");
        state.add_loss(19, "spool full");
        state.add_loss(21, "spool full");
        assert_eq!(state.lost, 3);
        assert_eq!(state.gaps.len(), 2);
        assert_eq!((state.gaps[0].from_seq, state.gaps[0].to_seq), (18, 19));
        let sent = state.gaps.clone();
        state.add_loss(22, "spool full"); // grows the second gap after it was sent
        state.acknowledge_gaps(&sent);
        assert_eq!(state.gaps.len(), 1);
        assert_eq!((state.gaps[0].from_seq, state.gaps[0].to_seq), (22, 22));
    }

    #[test]
    fn gap_list_is_bounded() {
        let mut state = State::new();
        for seq in (1..2000).step_by(2) {
            state.add_loss(seq, "spool full");
        }
        assert_eq!(state.gaps.len(), GAPS_MAX);
        let last = state.gaps.last().unwrap();
        assert_eq!(last.to_seq, 1999);
        assert!(last.reason.ends_with("(several gaps merged)"));
        assert_eq!(state.lost, 1000);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
