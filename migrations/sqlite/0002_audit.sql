-- Audit: every command typed on every audited host (the original's server_history), hash-chained per host.
-- history_datetime keeps the host's own "YYYY-MM-DD HH:MM:SS" (no zone, as the agent reports it; it sorts as
-- text); received_at is the server's arrival time in Unix ms.

CREATE TABLE server_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id BIGINT NOT NULL REFERENCES server_list (id),
    history_ip VARCHAR(45) NOT NULL REFERENCES server_list (server_lip),
    history_id BIGINT NOT NULL,
    history_user VARCHAR(64) NOT NULL,
    login_user VARCHAR(64),
    tty VARCHAR(64),
    history_datetime CHAR(19) NOT NULL,
    received_at BIGINT NOT NULL,
    history_command TEXT NOT NULL,
    source VARCHAR(8) NOT NULL,
    stream VARCHAR(64),
    seq BIGINT,
    dedup_key CHAR(64) NOT NULL,
    chain_seq BIGINT NOT NULL,
    prev_hash CHAR(64) NOT NULL,
    row_hash CHAR(64) NOT NULL,
    -- Agent events are idempotent on (host, stream, seq); the index appends per stream, so it stays cheap.
    CONSTRAINT server_history_stream_key UNIQUE (host_id, stream, seq),
    CONSTRAINT server_history_chain_key UNIQUE (host_id, chain_seq)
);
CREATE INDEX server_history_host_time_idx ON server_history (host_id, history_datetime);
CREATE INDEX server_history_user_idx ON server_history (history_user);

-- The head of each host's chain: deleting the newest rows is caught by comparing it with the last row.
CREATE TABLE audit_chain (
    host_id BIGINT NOT NULL PRIMARY KEY REFERENCES server_list (id),
    last_seq BIGINT NOT NULL,
    last_hash CHAR(64) NOT NULL
);

-- Events an agent could not keep (its spool overflowed): recorded, never silent.
CREATE TABLE audit_gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id BIGINT NOT NULL REFERENCES server_list (id),
    stream VARCHAR(64) NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq BIGINT NOT NULL,
    reason VARCHAR(255) NOT NULL,
    received_at BIGINT NOT NULL,
    CONSTRAINT audit_gaps_key UNIQUE (host_id, stream, from_seq, to_seq)
);

-- Agent tokens are bound to one host.
ALTER TABLE api_tokens ADD COLUMN host_id BIGINT REFERENCES server_list (id);
