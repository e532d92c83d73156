-- Audit rows without the columns that can be derived, and without the second foreign key (the same change in
-- every dialect):
-- * dedup_key and prev_hash are no longer stored. The dedup key is a hash of the row's own fields and the previous
--   hash is the host's previous row's row_hash; the writer and `omserver audit verify` compute both, and row MACs
--   are unchanged, so rows written before this migration still verify.
-- * history_ip no longer references server_list: a row keeps the address a command came from even after the host
--   is renumbered. host_id stays the foreign key to the inventory host.
-- SQLite cannot drop a foreign key, so the table is rebuilt. Its ids are now plain rowids (no AUTOINCREMENT, which
-- updated sqlite_sequence on every insert); ids still only grow while the newest row is not deleted, and deleting
-- rows is what `audit verify` reports.

CREATE TABLE server_history_new (
    id INTEGER PRIMARY KEY,
    host_id BIGINT NOT NULL REFERENCES server_list (id),
    history_ip VARCHAR(45) NOT NULL,
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
    chain_seq BIGINT NOT NULL,
    row_hash CHAR(64) NOT NULL,
    CONSTRAINT server_history_stream_key UNIQUE (host_id, stream, seq),
    -- Also what keeps a second writer on the same database from forking a chain: its insert fails instead.
    CONSTRAINT server_history_chain_key UNIQUE (host_id, chain_seq)
);
INSERT INTO server_history_new (id, host_id, history_ip, history_id, history_user, login_user, tty,
                                history_datetime, received_at, history_command, source, stream, seq, chain_seq,
                                row_hash)
    SELECT id, host_id, history_ip, history_id, history_user, login_user, tty, history_datetime, received_at,
           history_command, source, stream, seq, chain_seq, row_hash
    FROM server_history;
DROP TABLE server_history;
ALTER TABLE server_history_new RENAME TO server_history;
CREATE INDEX server_history_host_time_idx ON server_history (host_id, history_datetime);
CREATE INDEX server_history_user_idx ON server_history (history_user);
