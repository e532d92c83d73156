-- Saved jobs (templates): a module with its parameters, a target selector resolved at each run, a backend, a rollout
-- and a timeout. Each run stores the template id and the definition it ran with on the job (migration 0008).

CREATE TABLE job_templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(128) NOT NULL,
    description TEXT NOT NULL,
    module_id BIGINT NOT NULL,
    params TEXT NOT NULL,
    targets TEXT NOT NULL,
    backend VARCHAR(32),
    rollout TEXT,
    timeout_secs BIGINT,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by VARCHAR(128) NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT job_templates_name_key UNIQUE (name)
);
