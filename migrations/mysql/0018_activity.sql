-- The activity log: every change made through the API, the console or the command line (and every login), who
-- made it, from where, what it changed and how it ended. Rows are chained like the audit trail: each row's
-- `row_hash` is an HMAC (under a key derived from the server's secret) of its fields and of the previous row's
-- hash; `activity_head` holds the newest row's id and hash, so a deleted newest row shows too. A writer moves the
-- head only from the hash it read (`UPDATE … WHERE hash = ?`), so two servers never chain onto the same row.

CREATE TABLE activity (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor VARCHAR(128) NOT NULL,
    credential VARCHAR(160) NOT NULL,
    address VARCHAR(64) NOT NULL,
    user_agent VARCHAR(512) NOT NULL,
    action VARCHAR(64) NOT NULL,
    object VARCHAR(512) NOT NULL,
    changes MEDIUMTEXT NOT NULL,
    outcome VARCHAR(512) NOT NULL,
    prev_hash CHAR(64) NOT NULL,
    row_hash CHAR(64) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX activity_at_idx ON activity (at);
CREATE INDEX activity_actor_idx ON activity (actor, id);
CREATE INDEX activity_action_idx ON activity (action, id);

CREATE TABLE activity_head (
    id BIGINT NOT NULL PRIMARY KEY,
    last_id BIGINT NOT NULL,
    hash CHAR(64) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO activity_head (id, last_id, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
