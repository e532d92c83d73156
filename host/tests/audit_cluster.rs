//! The audit services of two servers on one PostgreSQL database, in one process. Every event is sent to both at
//! once, as an agent's resend through a load balancer lands on another server: each is stored exactly once,
//! neither server is ever told to send again, each host's chain stays one line that `audit verify` finds whole,
//! and ids keep the order of `received_at` (which the audit search's time ranges rely on). Each server's live
//! stream carries the other's rows too, promptly. A real PostgreSQL (a fresh database).

mod common;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use common::scratch::{plain_host, Scratch};
use omserver::{
    audit::{chain, AgentBatch, AuditConfig, AuditService},
    store::{AuditQuery, Dialect, Store},
};
use serde_json::json;

const KEY: &[u8] = b"one chain key for every server";
const STREAMS: usize = 3;
const BATCHES: usize = 12;
const PER_BATCH: usize = 40;
const LEGACY_LINES: usize = 60;

fn agent_batch(stream: usize, batch: usize) -> AgentBatch {
    let events: Vec<_> = (0..PER_BATCH)
        .map(|i| {
            let seq = (batch * PER_BATCH + i + 1) as i64;
            json!({ "stream": format!("s{stream}"), "seq": seq, "history_id": seq, "user": "root",
                    "time": "2026-12-05 04:00:00", "command": format!("cmd {stream} {seq}") })
        })
        .collect();
    serde_json::from_value(json!({ "events": events })).expect("a batch")
}

fn legacy_query(ip: &str, line: usize) -> String {
    format!(
        "history_id={line}&history_ip={ip}&history_user=root&history_datetime=2026-12-05%2004%3A00%3A{:02}\
         &history_command=legacy%20{line}",
        line % 60
    )
}

/// Each server's audit service, with one chain key.
fn services(stores: &[Store]) -> Vec<Arc<AuditService>> {
    stores
        .iter()
        .map(|store| {
            AuditService::start(store.clone(), store.audit_sink().unwrap(), AuditConfig::default(), KEY.to_vec())
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_audit_writers_store_each_event_once_on_one_chain_per_host() {
    let scratch = Scratch::create(Dialect::Postgres).await;
    let stores = [Store::connect(&scratch.url).await.unwrap(), Store::connect(&scratch.url).await.unwrap()];
    // Two hosts run omaudit-agent, one the original agent (whose resends are recognised among its newest lines).
    let mut host_ids = Vec::new();
    for (name, ip) in [("alpha", "10.9.0.1"), ("beta", "10.9.0.2")] {
        host_ids.push(stores[0].add_host(&plain_host(name, ip)).await.unwrap().id);
    }
    let legacy_ip = "10.9.0.3";
    let legacy_host = stores[0].add_host(&plain_host("gamma", legacy_ip)).await.unwrap().id;
    let servers = services(&stores);

    // The first server's live stream, which must carry the rows either server stored.
    let mut live = servers[0].subscribe();

    // Every agent batch and every legacy line goes to both servers at the same moment.
    let mut tasks = Vec::new();
    for (h, &host_id) in host_ids.iter().enumerate() {
        for stream in 0..STREAMS {
            for server in &servers {
                let server = server.clone();
                tasks.push(tokio::spawn(async move {
                    let mut acks = Vec::new();
                    for batch in 0..BATCHES {
                        let ack = server.ingest_agent(Some(host_id), agent_batch(stream, batch)).await;
                        let ack = ack.unwrap_or_else(|e| panic!("host {h} stream {stream} batch {batch}: {e}"));
                        acks.push((ack.stored, ack.duplicates, ack.rejected.len()));
                    }
                    acks
                }));
            }
        }
    }
    for server in &servers {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for line in 0..LEGACY_LINES {
                let peer: IpAddr = legacy_ip.parse().unwrap();
                server
                    .ingest_legacy(&legacy_query(legacy_ip, line), peer)
                    .await
                    .unwrap_or_else(|e| panic!("legacy line {line}: {e}"));
            }
            Vec::new()
        }));
    }
    let mut stored = 0;
    let mut duplicates = 0;
    for task in tasks {
        for (s, d, rejected) in task.await.expect("a sender panicked") {
            assert_eq!(rejected, 0);
            stored += s;
            duplicates += d;
        }
    }
    let agent_events = host_ids.len() * STREAMS * BATCHES * PER_BATCH;
    assert_eq!((stored, duplicates), (agent_events, agent_events), "each event stored by one server only");

    let rows = stores[1].query_audit(&AuditQuery { limit: 100_000, ..AuditQuery::default() }).await.unwrap();
    let legacy_rows = rows.iter().filter(|r| r.source == "legacy").count();
    assert_eq!(legacy_rows, LEGACY_LINES, "each legacy line once, whichever server had it");
    assert_eq!(rows.len(), agent_events + legacy_rows);
    let mut by_id = rows.clone();
    by_id.sort_by_key(|r| r.id);
    assert!(
        by_id.windows(2).all(|w| w[0].received_at <= w[1].received_at),
        "received_at goes down somewhere in id order"
    );
    for host_id in host_ids.iter().chain([&legacy_host]) {
        let mut seqs: Vec<i64> = rows.iter().filter(|r| r.host_id == *host_id).map(|r| r.chain_seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "host {host_id}: one chain, no holes");
    }
    // The live stream: every row once, in id order, whichever server stored it.
    let mut streamed = Vec::new();
    while streamed.len() < rows.len() {
        match tokio::time::timeout(Duration::from_secs(10), live.recv()).await {
            Ok(Ok(row)) => streamed.push(row.id),
            other => panic!("the live stream stopped after {} of {} rows: {other:?}", streamed.len(), rows.len()),
        }
    }
    assert_eq!(streamed, by_id.iter().map(|r| r.id).collect::<Vec<_>>(), "the live stream, in id order");

    let report = chain::verify(&stores[0], KEY).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.rows, rows.len() as u64);

    drop(servers);
    for store in stores {
        store.close().await;
    }
    scratch.drop_database().await;
}

/// One event at a time into the second server, each awaited on the first one's live stream: how long from the
/// ingest's answer to the row on the other server's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_stored_by_one_server_reaches_the_others_live_stream_promptly() {
    const EVENTS: usize = 200;
    let scratch = Scratch::create(Dialect::Postgres).await;
    let stores = [Store::connect(&scratch.url).await.unwrap(), Store::connect(&scratch.url).await.unwrap()];
    let host_id = stores[0].add_host(&plain_host("alpha", "10.9.0.1")).await.unwrap().id;
    let servers = services(&stores);
    let mut live = servers[0].subscribe();
    let mut waits = Vec::with_capacity(EVENTS);
    for seq in 1..=EVENTS as i64 {
        let batch: AgentBatch = serde_json::from_value(json!({ "events": [
            { "stream": "one", "seq": seq, "history_id": seq, "user": "root", "time": "2026-12-05 04:00:00",
              "command": format!("echo {seq}") }] }))
        .unwrap();
        let ack = servers[1].ingest_agent(Some(host_id), batch).await.unwrap();
        assert_eq!(ack.stored, 1);
        let stored = Instant::now();
        let row = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .unwrap_or_else(|_| panic!("event {seq} did not reach the other server's stream in 5 s"))
            .expect("a row");
        waits.push(stored.elapsed());
        assert_eq!((row.seq, row.history_command.as_str()), (Some(seq), format!("echo {seq}").as_str()));
    }
    waits.sort();
    let p50 = waits[EVENTS / 2];
    let p99 = waits[EVENTS * 99 / 100];
    println!(
        "from one server's answer to the other's live stream: p50 {p50:?}, p99 {p99:?}, max {:?}",
        waits[EVENTS - 1]
    );
    assert!(p99 <= Duration::from_millis(250), "p99 {p99:?}");

    drop(servers);
    for store in stores {
        store.close().await;
    }
    scratch.drop_database().await;
}
