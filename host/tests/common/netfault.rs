//! A bad network between the server under test and the netns piece's hosts (testenv/netns.sh): nftables rules in
//! a host's namespace (packet loss, a cut link), a relay that holds every byte back (latency with jitter; this
//! kernel has no netem), and readings of a process's descriptors, threads and memory, to show it recovered.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use super::testenv::{NetnsEnv, NetnsHost};

/// A fault on one host's link, in force until dropped (then its namespace's fault chains are emptied).
pub struct Fault {
    namespace: String,
    table: String,
}

impl Fault {
    /// Drops `percent` % of the packets that reach the host, chosen at random (nftables `numgen random`), as a
    /// lossy link does on its way in: the server's segments are lost and retransmitted, the host's ACKs get through.
    pub fn lose(env: &NetnsEnv, host: &NetnsHost, percent: u32) -> Fault {
        assert!(percent < 100, "a loss of {percent} % is a cut: use Fault::cut");
        let fault = Fault::empty(env, host);
        let rule = format!("numgen random mod 100 < {percent} counter drop");
        fault.nft(&["add", "rule", "inet", &fault.table, "input", &rule]);
        fault
    }

    /// Drops `percent` % of the packets both ways: requests, answers and acknowledgements alike.
    pub fn lose_both_ways(env: &NetnsEnv, host: &NetnsHost, percent: u32) -> Fault {
        let fault = Fault::lose(env, host, percent);
        let rule = format!("numgen random mod 100 < {percent} counter drop");
        fault.nft(&["add", "rule", "inet", &fault.table, "output", &rule]);
        fault
    }

    /// Drops everything to and from the host: a cable pulled, a switch port dead. Nothing is refused or reset;
    /// the other side hears nothing at all.
    pub fn cut(env: &NetnsEnv, host: &NetnsHost) -> Fault {
        let fault = Fault::empty(env, host);
        for chain in ["input", "output"] {
            fault.nft(&["add", "rule", "inet", &fault.table, chain, "counter", "drop"]);
        }
        fault
    }

    fn empty(env: &NetnsEnv, host: &NetnsHost) -> Fault {
        assert!(!env.nft_table.is_empty(), "the netns piece is not up: run `cargo xtask testenv up netns`");
        let fault = Fault { namespace: host.namespace.clone(), table: env.nft_table.clone() };
        fault.flush();
        fault
    }

    /// Packets this fault has dropped so far (its rules' counters): proof that it acted.
    pub fn dropped(&self) -> u64 {
        ["input", "output"]
            .iter()
            .map(|chain| {
                let listing = self.nft(&["list", "chain", "inet", &self.table, chain]);
                let words: Vec<&str> = listing.split_whitespace().collect();
                words
                    .windows(3)
                    .filter(|w| w[0] == "counter" && w[1] == "packets")
                    .filter_map(|w| w[2].parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    fn flush(&self) {
        for chain in ["input", "output"] {
            self.nft(&["flush", "chain", "inet", &self.table, chain]);
        }
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.namespace, "nft"])
            .args(args)
            .output()
            .expect("run ip netns exec … nft");
        assert!(
            out.status.success(),
            "nft {} in {}: {}",
            args.join(" "),
            self.namespace,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A TCP relay on `bind` (port 0) to `target` that delivers each chunk, in each direction, `delay` ± `jitter` after
/// it arrived (in order: a chunk is never delivered before the one read before it). Stops when dropped.
pub struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl Relay {
    pub fn start(bind: &str, target: SocketAddr, delay: Duration, jitter: Duration) -> Relay {
        assert!(jitter <= delay, "jitter larger than the delay would deliver before arrival");
        let listener = TcpListener::bind((bind, 0)).expect("bind the relay");
        listener.set_nonblocking(true).expect("non-blocking relay listener");
        let port = listener.local_addr().expect("relay address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, open2, accepted2) = (stop.clone(), open.clone(), accepted.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                accepted2.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for end in [&client, &server] {
                    let _ = end.set_nodelay(true);
                    if let Ok(clone) = end.try_clone() {
                        open2.lock().unwrap_or_else(|p| p.into_inner()).push(clone);
                    }
                }
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
                delayed_pump(client, server2, delay, jitter);
                delayed_pump(server, client2, delay, jitter);
            }
        });
        Relay { port, stop, open, accepted }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`, each chunk held back until its due time; `from`'s end shuts `to`'s writing side.
fn delayed_pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, jitter: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut due = Instant::now();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let spread = jitter.as_micros() as i64;
            let offset = if spread == 0 { 0 } else { rand::random_range(-spread..=spread) };
            let wait = Duration::from_micros((delay.as_micros() as i64 + offset).max(0) as u64);
            due = due.max(Instant::now() + wait);
            if tx.send((due, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// What a process holds: open descriptors (and how many of them are sockets), threads, resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub fds: usize,
    pub sockets: usize,
    pub threads: usize,
    pub rss_kib: u64,
}

impl Resources {
    pub fn of(pid: u32) -> Resources {
        let (mut fds, mut sockets) = (0, 0);
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").map_while(Result::ok) {
            fds += 1;
            // A descriptor closed between the listing and this read is simply not a socket.
            if std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:")) {
                sockets += 1;
            }
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Resources { fds, sockets, threads: field("Threads:") as usize, rss_kib: field("VmRSS:") }
    }

    /// Back to `baseline`: at most one more socket (a pooled connection the last job opened), at most six more
    /// descriptors in all (the database pool may have grown by two SQLite connections of three files each), at
    /// most four more threads (tokio's idle blocking threads linger 10 s), and resident memory within 10 % (plus
    /// 8 MiB of allocator slack). A connection left open per fault shows in the sockets.
    pub fn back_to(&self, baseline: &Resources) -> bool {
        self.sockets <= baseline.sockets + 1
            && self.fds <= baseline.fds + 6
            && self.threads <= baseline.threads + 4
            && self.rss_kib <= baseline.rss_kib + baseline.rss_kib / 10 + 8 * 1024
    }

    /// Waits up to `limit` for process `pid` to be [`Resources::back_to`] `baseline`; returns the reading.
    pub fn settle(pid: u32, baseline: &Resources, limit: Duration) -> Resources {
        let started = Instant::now();
        loop {
            let now = Resources::of(pid);
            if now.back_to(baseline) {
                return now;
            }
            assert!(started.elapsed() < limit, "not back to the baseline within {limit:?}: {baseline:?} then {now:?}");
            thread::sleep(Duration::from_millis(250));
        }
    }
}
