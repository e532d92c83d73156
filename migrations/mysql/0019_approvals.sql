-- Approvals: a policy names the jobs that wait for a second person before they run, by the same selector as a
-- grant (`spec`: {"functions", "apps", "tags", "modules", "templates"} as JSON, matched in the server): a job
-- matches when one of its hosts is in the selector's part of the inventory (any host, when it names none) and its
-- module or saved job is listed (any, when it lists none). Such a job is stored as `pending_approval` with a row
-- here, decided once (`approved`, `rejected`, `expired`, `withdrawn`): the row is the record of who asked, who
-- decided, when and why. `policy_name` is kept as it was: a policy deleted later leaves its jobs' record whole.

CREATE TABLE approval_policies (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(128) NOT NULL,
    spec TEXT NOT NULL,
    expire_secs BIGINT NOT NULL,
    exempt_schedules BIGINT NOT NULL,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT approval_policies_name_key UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE job_approvals (
    job_id BIGINT NOT NULL PRIMARY KEY,
    policy_id BIGINT NOT NULL,
    policy_name VARCHAR(128) NOT NULL,
    requested_by VARCHAR(128) NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decision VARCHAR(16),
    decided_by VARCHAR(128),
    comment TEXT,
    decided_at BIGINT,
    CONSTRAINT job_approvals_job_fk FOREIGN KEY (job_id) REFERENCES jobs (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX job_approvals_open_idx ON job_approvals (decision, expires_at);
