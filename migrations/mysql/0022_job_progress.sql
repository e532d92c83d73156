-- Jobs watched from other servers. A running job's host results, as its backend reports them, are copied into
-- `job_progress` (entry `seq` of the job's progress, from 0) where servers share the database, so that a job page
-- on any server streams them; the rows go when the job ends (its results are in `job_results` then).
-- `jobs.cancel_requested_at`: a cancel asked on a server that does not run the job, for the one that does.

CREATE TABLE job_progress (
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    host VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    rc BIGINT,
    stdout MEDIUMTEXT NOT NULL,
    stderr MEDIUMTEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

ALTER TABLE jobs ADD COLUMN cancel_requested_at BIGINT;
