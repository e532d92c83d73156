-- Servers of one database: each serving process registers itself by name and writes `last_seen_at` every few
-- seconds (its heartbeat); a server that stops cleanly removes its row. `jobs.node` names the server that runs a
-- job (NULL for jobs from before servers had names), so that a server restarting fails only its own unfinished
-- jobs, and the cluster view can say what each server is running.

CREATE TABLE cluster_nodes (
    name VARCHAR(128) NOT NULL PRIMARY KEY,
    address VARCHAR(255) NOT NULL,
    version VARCHAR(64) NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

ALTER TABLE jobs ADD COLUMN node VARCHAR(128);
