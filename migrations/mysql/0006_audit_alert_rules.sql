-- Audit alert rules: a regular expression on the command, optionally only for one host (by inventory id) and one
-- user (matched against the history user and the login user). Matching events are flagged in the stream and the
-- console and counted per rule in /metrics. Rule names are unique (they label the metric).

CREATE TABLE audit_alert_rules (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    pattern VARCHAR(1000) NOT NULL,
    host_id BIGINT,
    user_name VARCHAR(64),
    created_by VARCHAR(255) NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT audit_alert_rules_name_key UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
