-- Jobs across the servers of one database. A running job's host results, as its backend reports them, are copied into
-- `job_progress` (entry `seq` of the job's progress, from 0) where servers share the database, so that a job page
-- on any server streams them; the rows go when the job ends (its results are in `job_results` then).
-- `jobs.cancel_requested_at`: a cancel asked on a server that does not run the job, for the one that does.
-- `jobs.module_sha256`: the content hash of the module the job was accepted with; where servers share the
-- database, a queued job has no `node` until a server with that very module and a free slot takes it.
-- `cluster_modules`: the modules each server serves from its own plugins.d (file and content hash), written with
-- its heartbeat when they change, so that `GET /api/modules` says which servers serve each one.

CREATE TABLE job_progress (
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    host VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    rc BIGINT,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

ALTER TABLE jobs ADD COLUMN cancel_requested_at BIGINT;
ALTER TABLE jobs ADD COLUMN module_sha256 VARCHAR(64);

CREATE TABLE cluster_modules (
    node VARCHAR(128) NOT NULL,
    file VARCHAR(255) NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    PRIMARY KEY (node, file)
);
