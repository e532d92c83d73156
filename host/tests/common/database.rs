//! The running server's SQLite file, read and written behind its back: how tests play an intruder with database
//! access (editing or deleting audit rows) and look at what was stored. WAL lets both connections in.

use std::{future::Future, str::FromStr, time::Duration};

use sqlx::{sqlite::SqliteConnectOptions, Connection, SqliteConnection};

use super::Server;

pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

/// A plain connection to the server's SQLite file (the server keeps running).
pub async fn open_db(server: &Server) -> SqliteConnection {
    let url = format!("sqlite://{}", server.dir.path().join("omserver.db").display());
    let options = SqliteConnectOptions::from_str(&url).unwrap().busy_timeout(Duration::from_secs(10));
    SqliteConnection::connect_with(&options).await.expect("open the server's SQLite file")
}

/// The integers a query returns (first column), read straight from the database file.
pub fn db_ints(server: &Server, sql: &str) -> Vec<i64> {
    block_on(async {
        let mut conn = open_db(server).await;
        let out = sqlx::query_scalar::<_, i64>(sql).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        out
    })
}

/// The activity log's line of `omserver audit verify` on an intact log: its rows are whatever the server recorded
/// (the seed module loaded at start, hosts added…), counted here.
pub fn intact_activity_line(server: &Server) -> String {
    let rows = db_ints(server, "SELECT COUNT(*) FROM activity")[0];
    format!("{rows} activity log rows checked, 0 problems\n")
}

/// Runs one statement on the database file and returns the rows it changed.
pub fn db_exec(server: &Server, sql: &str) -> u64 {
    block_on(async {
        let mut conn = open_db(server).await;
        let out = sqlx::query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}")).rows_affected();
        let _ = conn.close().await;
        out
    })
}
