//! haproxy in front of several servers, as a deployment puts it: round robin, each server health-checked on
//! `/healthz` every 300 ms (down after 2 failures), a request that cannot connect sent to another server. Each
//! test runs its own, with a configuration naming its servers' ports; Debian's binary comes from the test
//! environment's haproxy piece. The cluster benchmark (`host/examples/cluster_bench.rs`) uses it too.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Balancer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// `binary` (haproxy) on a free loopback port in front of `servers` (their base URLs), once it accepts
    /// connections.
    pub fn start(binary: &std::path::Path, servers: &[&str]) -> Balancer {
        assert!(
            !binary.as_os_str().is_empty() && binary.exists(),
            "haproxy is not installed: run `cargo xtask testenv up haproxy`"
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let backends: String = servers
            .iter()
            .enumerate()
            .map(|(i, base)| {
                let address = base.trim_start_matches("http://");
                format!("    server s{i} {address} check\n")
            })
            .collect();
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 120s\n    timeout server 120s\n\
             \x20   retries 3\n    option redispatch 1\n\
             frontend omserver\n    bind 127.0.0.1:{port}\n    default_backend servers\n\
             backend servers\n    balance roundrobin\n    option httpchk GET /healthz\n\
             \x20   http-check expect status 200\n    default-server inter 300ms fall 2 rise 1\n{backends}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("haproxy log");
        let child = Command::new(binary)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy does not listen on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Balancer { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
