-- Retention: how far each host's chain has been moved out of the database into archive files
-- (`audit/archive.rs`). The rows at positions 1..=last_seq are in the archive, the last of them with MAC
-- last_hash; the kept rows continue from there. `mark` is an HMAC of the three under the chain key, so that a
-- position cannot be advanced (rows deleted and called archived) without the server's key.
CREATE TABLE audit_archived (
    host_id BIGINT NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    last_hash CHAR(64) NOT NULL,
    mark CHAR(64) NOT NULL,
    archived_at BIGINT NOT NULL,
    CONSTRAINT audit_archived_host_fk FOREIGN KEY (host_id) REFERENCES server_list (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
