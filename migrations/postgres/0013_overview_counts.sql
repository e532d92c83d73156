-- The counts the console's home page charts, kept where the facts are written so that drawing them never reads
-- the history: `job_days` counts ended jobs by the UTC day they were created and their final status (updated
-- by the transaction that ends a job), `audit_hours` counts stored audit events by the hour the server received
-- them (updated by the audit writer's batch transaction). Both are filled from the rows already stored; that
-- reads the whole audit table once, at this upgrade. Queued and running jobs are counted live, through the
-- status index. The same change in every dialect.

CREATE TABLE job_days (
    day BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    jobs BIGINT NOT NULL,
    PRIMARY KEY (day, status)
);
INSERT INTO job_days (day, status, jobs)
    SELECT created_at - (created_at % 86400000), status, COUNT(*) FROM jobs
    WHERE status NOT IN ('queued', 'running') GROUP BY created_at - (created_at % 86400000), status;

CREATE TABLE audit_hours (
    hour BIGINT NOT NULL PRIMARY KEY,
    events BIGINT NOT NULL
);
INSERT INTO audit_hours (hour, events)
    SELECT received_at - (received_at % 3600000), COUNT(*) FROM server_history
    GROUP BY received_at - (received_at % 3600000);

-- Running and queued jobs (the home page's first list, and /jobs?status=…) without reading every job.
CREATE INDEX jobs_status_idx ON jobs (status, id);
