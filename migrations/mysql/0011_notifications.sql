-- Notifications. `notify_events` is the outbox of facts: a finished job or a missed / failed schedule fire writes its
-- row in the same transaction as the fact, so a crash between the two loses nothing. The notifier turns each into
-- one `notify_deliveries` row per matching subscription (and deletes it) in one transaction. Deliveries are sent
-- with retries; every attempt is logged in `notify_attempts`. `notify_cursors` holds how far the notifier has read
-- a stream it does not own (the audit log, for alert matches).

CREATE TABLE notify_channels (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(128) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    config TEXT NOT NULL,
    secret TEXT,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT notify_channels_name_key UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE notify_subscriptions (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel_id BIGINT NOT NULL,
    event VARCHAR(32) NOT NULL,
    filter TEXT NOT NULL,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX notify_subscriptions_channel_idx ON notify_subscriptions (channel_id);

CREATE TABLE notify_events (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind VARCHAR(32) NOT NULL,
    subject_id BIGINT,
    detail TEXT,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE notify_deliveries (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uid VARCHAR(64) NOT NULL,
    channel_id BIGINT NOT NULL,
    subscription_id BIGINT,
    event VARCHAR(32) NOT NULL,
    group_key VARCHAR(255),
    payload MEDIUMTEXT NOT NULL,
    match_count BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_at BIGINT,
    CONSTRAINT notify_deliveries_uid_key UNIQUE (uid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX notify_deliveries_due_idx ON notify_deliveries (status, next_at);
CREATE INDEX notify_deliveries_group_idx ON notify_deliveries (group_key, id);
CREATE INDEX notify_deliveries_channel_idx ON notify_deliveries (channel_id, status);

CREATE TABLE notify_attempts (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    answer TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX notify_attempts_delivery_idx ON notify_attempts (delivery_id);

CREATE TABLE notify_cursors (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- Alerts are notified from here on: the history before notifications existed is not replayed.
INSERT INTO notify_cursors (name, position) SELECT 'audit', COALESCE(MAX(id), 0) FROM server_history;
