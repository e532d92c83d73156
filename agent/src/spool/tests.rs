use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use super::*;
use crate::history::HistoryLine;
use crate::identity::Identity;

fn capture(history_id: u64, tty: &str, command: &str) -> Capture {
    Capture {
        line: HistoryLine {
            history_id,
            user: "root".into(),
            time: "2026-11-24 10:00:00".into(),
            command: command.into(),
        },
        identity: Identity { uid: 0, login_user: "alice".into(), tty: tty.into(), session: None },
        ip: String::new(),
    }
}

fn spool(max: u64) -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 4242, max).unwrap();
    (dir, spool)
}

fn spooled_lines(spool: &Spool) -> Vec<Event> {
    match fs::read_to_string(spool.path()) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn append_assigns_stream_and_increasing_seq() {
    let (_dir, spool) = spool(100);
    let a = spool.record(capture(1, "/dev/pts/0", "ls -l")).unwrap();
    let b = spool.record(capture(2, "/dev/pts/0", "echo  'x  y' *")).unwrap();
    assert_eq!(a, Recorded { outcome: Outcome::Appended(1), pending: true });
    assert_eq!(b.outcome, Outcome::Appended(2));
    let events = spooled_lines(&spool);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].stream.len(), 32);
    assert_eq!(events[0].stream, events[1].stream);
    assert_eq!(events[1].command, "echo  'x  y' *");
    assert_eq!(events[1].login_user, "alice");
    assert_eq!(spool.status().unwrap().spooled, 2);
    assert_eq!(fs::metadata(spool.path()).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn repeated_history_line_is_recorded_once_per_terminal() {
    let (_dir, spool) = spool(100);
    assert_eq!(spool.record(capture(7, "/dev/pts/0", "make")).unwrap().outcome, Outcome::Appended(1));
    // Empty Enter: bash runs PROMPT_COMMAND again with the same `history 1`.
    assert_eq!(spool.record(capture(7, "/dev/pts/0", "make")).unwrap().outcome, Outcome::Duplicate);
    assert_eq!(spool.record(capture(7, "/dev/pts/0", "make")).unwrap().outcome, Outcome::Duplicate);
    // Same line on another terminal, and the same command typed again (new number), are real events.
    assert_eq!(spool.record(capture(7, "/dev/pts/1", "make")).unwrap().outcome, Outcome::Appended(2));
    assert_eq!(spool.record(capture(8, "/dev/pts/0", "make")).unwrap().outcome, Outcome::Appended(3));
    assert_eq!(spooled_lines(&spool).len(), 3);
}

#[test]
fn full_spool_counts_losses_and_reports_one_gap() {
    let (_dir, spool) = spool(2);
    for i in 1..=5 {
        spool.record(capture(i, "", &format!("cmd {i}"))).unwrap();
    }
    let status = spool.status().unwrap();
    assert_eq!(status.spooled, 2);
    assert_eq!(status.state.lost, 3);
    assert_eq!(status.state.gaps.len(), 1);
    let gap = &status.state.gaps[0];
    assert_eq!((gap.from_seq, gap.to_seq, gap.reason.as_str()), (3, 5, "spool full"));
    assert_eq!(gap.stream, status.state.stream);

    // Delivering the batch (events and gap) makes room and clears the gap; the next event continues the stream.
    let batch = spool.read_batch(0, &[], 500, 1 << 20).unwrap();
    assert_eq!(batch.events.len(), 2);
    assert_eq!(batch.gaps.len(), 1);
    assert_eq!(spool.remove(&batch, Vec::new()).unwrap(), 0);
    let status = spool.status().unwrap();
    assert!(status.state.gaps.is_empty());
    assert_eq!(status.state.lost, 3, "the lifetime counter stays");
    assert_eq!(spool.record(capture(6, "", "cmd 6")).unwrap().outcome, Outcome::Appended(6));
}

#[test]
fn remove_takes_exactly_the_sent_events_and_keeps_later_appends() {
    let (_dir, spool) = spool(100);
    for i in 1..=10 {
        spool.record(capture(i, "", &format!("cmd {i}"))).unwrap();
    }
    let batch = spool.read_batch(0, &[], 4, 1 << 20).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // Appended while the batch is on the wire.
    spool.record(capture(11, "", "cmd 11")).unwrap();
    assert_eq!(spool.remove(&batch, Vec::new()).unwrap(), 7);
    let left: Vec<u64> = spooled_lines(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(left, vec![5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(spool.status().unwrap().state.spooled, 7);
    assert!(spool.status().unwrap().state.last_delivery_at.is_some());
}

#[test]
fn byte_limit_cuts_batches_but_always_takes_one_event() {
    let (_dir, spool) = spool(100);
    for i in 1..=3 {
        spool.record(capture(i, "", &"x".repeat(1000))).unwrap();
    }
    assert_eq!(spool.read_batch(0, &[], 500, 10).unwrap().events.len(), 1);
    // Lines are ~1.1 KB: after two (~2.2 KB) the budget of 2.5 KB still admits a third.
    assert_eq!(spool.read_batch(0, &[], 500, 2500).unwrap().events.len(), 3);
    assert_eq!(spool.read_batch(0, &[], 500, 2000).unwrap().events.len(), 2);
    assert_eq!(spool.read_batch(0, &[], 2, 1 << 20).unwrap().events.len(), 2);
}

#[test]
fn replaced_spool_falls_back_to_removal_by_key() {
    let (_dir, spool) = spool(100);
    for i in 1..=3 {
        spool.record(capture(i, "", &format!("cmd {i}"))).unwrap();
    }
    let batch = spool.read_batch(0, &[], 2, 1 << 20).unwrap();
    // Someone rewrote the file (new inode) with the lines in another order.
    let mut lines: Vec<String> = fs::read_to_string(spool.path()).unwrap().lines().map(str::to_owned).collect();
    lines.reverse();
    fs::remove_file(spool.path()).unwrap();
    fs::write(spool.path(), lines.join("\n") + "\n").unwrap();
    fs::set_permissions(spool.path(), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(spool.remove(&batch, Vec::new()).unwrap(), 1);
    assert_eq!(spooled_lines(&spool).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
}

#[test]
fn damaged_lines_are_skipped_and_never_glued_to_new_ones() {
    let (_dir, spool) = spool(100);
    spool.record(capture(1, "", "one")).unwrap();
    // A crash mid-append left half a line without its newline.
    let mut file = fs::OpenOptions::new().append(true).open(spool.path()).unwrap();
    file.write_all(b"{\"stream\":\"ab").unwrap();
    drop(file);
    spool.record(capture(2, "", "two")).unwrap();
    let batch = spool.read_batch(0, &[], 500, 1 << 20).unwrap();
    assert_eq!(batch.events.iter().map(|e| e.command.as_str()).collect::<Vec<_>>(), vec!["one", "two"]);
    assert_eq!(batch.corrupt, vec!["{\"stream\":\"ab".to_owned()]);
    assert_eq!(spool.remove(&batch, Vec::new()).unwrap(), 0);
    assert!(spooled_lines(&spool).is_empty());
}

#[test]
fn damaged_state_starts_a_new_stream_and_keeps_a_copy() {
    let (dir, spool) = spool(100);
    spool.record(capture(1, "", "one")).unwrap();
    let old_stream = spool.status().unwrap().state.stream;
    fs::write(dir.path().join("4242.state"), b"{not json").unwrap();
    assert_eq!(spool.record(capture(2, "", "two")).unwrap().outcome, Outcome::Appended(1));
    let status = spool.status().unwrap();
    assert_ne!(status.state.stream, old_stream);
    assert_eq!(status.state.spooled, 2, "the spool was recounted");
    assert!(dir.path().join("4242.state.damaged").exists());
}

#[test]
fn concurrent_appends_from_threads_keep_every_line_intact() {
    let (_dir, spool) = spool(100_000);
    let spool = Arc::new(spool);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let spool = Arc::clone(&spool);
            std::thread::spawn(move || {
                for i in 0..50 {
                    // Long commands make torn writes visible if locking were broken.
                    let command = format!("thread {t} command {i} {}", "ü".repeat(3000));
                    let outcome = spool.record(capture(i, &format!("/dev/pts/{t}"), &command)).unwrap().outcome;
                    assert!(matches!(outcome, Outcome::Appended(_)));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let events = spooled_lines(&spool);
    assert_eq!(events.len(), 400);
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    for t in 0..8 {
        let mine = events.iter().filter(|e| e.tty == format!("/dev/pts/{t}")).count();
        assert_eq!(mine, 50);
    }
    assert_eq!(spool.status().unwrap().state.spooled, 400);
}

#[test]
fn error_notes_change_only_when_different() {
    let (_dir, spool) = spool(100);
    assert!(spool.note_error(Some("token refused")).unwrap());
    assert!(!spool.note_error(Some("token refused")).unwrap());
    assert_eq!(spool.status().unwrap().state.last_error.as_deref(), Some("token refused"));
    assert!(spool.note_error(None).unwrap());
}

#[test]
fn flush_lock_is_exclusive() {
    let (_dir, spool) = spool(100);
    assert!(!spool.flusher_running().unwrap());
    let held = spool.flush_lock(false).unwrap();
    assert!(held.is_some());
    assert!(spool.flusher_running().unwrap());
    assert!(spool.flush_lock(false).unwrap().is_none());
    drop(held);
    assert!(!spool.flusher_running().unwrap());
}

#[test]
fn state_survives_a_crash_between_overwrite_and_cut() {
    let (dir, spool) = spool(100);
    spool.record(capture(1, "", "one")).unwrap();
    let stream = spool.status().unwrap().state.stream;
    // What a crash after writing a shorter state over a longer one leaves: a complete value, then old bytes.
    let path = dir.path().join("4242.state");
    let mut text = fs::read(&path).unwrap();
    text.extend_from_slice(b"9,\"spooled\":3}garbage");
    fs::write(&path, text).unwrap();
    assert_eq!(spool.record(capture(2, "", "two")).unwrap().outcome, Outcome::Appended(2));
    assert_eq!(spool.status().unwrap().state.stream, stream);
    assert!(serde_json::from_slice::<State>(&fs::read(&path).unwrap()).is_ok(), "the next save cut the tail");
}

#[test]
fn acknowledged_runs_are_removed_together() {
    let (_dir, spool) = spool(2);
    for i in 1..=7 {
        spool.record(capture(i, "", &format!("cmd {i}"))).unwrap();
    }
    let spooled = |s: &Spool| spooled_lines(s).iter().map(|e| e.seq).collect::<Vec<_>>();
    // Only 2 fit; 3..=7 are a gap. Make room by hand so more can be appended.
    let mut acked = spool.read_batch(0, &[], 1, 1 << 20).unwrap();
    assert_eq!(acked.gaps.len(), 1);
    let next = spool.read_batch(acked.end(), &acked.gaps, 1, 1 << 20).unwrap();
    assert!(next.gaps.is_empty(), "gaps already sent are not sent again");
    assert_eq!(next.events[0].seq, 2);
    acked.extend(next);
    assert!(spool.read_batch(acked.end(), &acked.gaps, 1, 1 << 20).unwrap().is_empty());
    assert_eq!(spool.remove(&acked, Vec::new()).unwrap(), 0);
    assert!(spooled(&spool).is_empty());
    assert!(spool.status().unwrap().state.gaps.is_empty());
}

#[test]
fn a_run_not_at_the_start_is_removed_by_key() {
    let (_dir, spool) = spool(100);
    for i in 1..=4 {
        spool.record(capture(i, "", &format!("cmd {i}"))).unwrap();
    }
    let first = spool.read_batch(0, &[], 1, 1 << 20).unwrap();
    let second = spool.read_batch(first.end(), &[], 2, 1 << 20).unwrap();
    assert_eq!(second.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(spool.remove(&second, Vec::new()).unwrap(), 2);
    assert_eq!(spooled_lines(&spool).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 4]);
}
