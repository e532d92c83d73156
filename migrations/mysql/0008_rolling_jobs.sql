-- Rolling jobs and re-runs: a job may carry a rollout (batches and a failure threshold), name the job it re-runs
-- and the saved job (template) it came from with the definition it ran with; each batch is recorded as it runs.
-- Per-host statuses gain `cancelled` and `skipped` (a VARCHAR(16) already holds them).

ALTER TABLE jobs ADD COLUMN rollout TEXT NULL, ADD COLUMN rerun_of BIGINT NULL, ADD COLUMN template_id BIGINT NULL,
    ADD COLUMN definition MEDIUMTEXT NULL;
CREATE INDEX jobs_rerun_of_idx ON jobs (rerun_of);
CREATE INDEX jobs_template_idx ON jobs (template_id);

CREATE TABLE job_batches (
    job_id BIGINT NOT NULL,
    batch_no BIGINT NOT NULL,
    hosts MEDIUMTEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    CONSTRAINT job_batches_key PRIMARY KEY (job_id, batch_no),
    CONSTRAINT job_batches_job_fk FOREIGN KEY (job_id) REFERENCES jobs (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
