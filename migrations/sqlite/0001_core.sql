-- Inventory (the original's three levels), jobs with per-host results, API tokens.
-- Times are Unix milliseconds (BIGINT) in every dialect. Never edit this file once applied: add a new one.

CREATE TABLE server_fun_categ (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_categ_name VARCHAR(64) NOT NULL,
    CONSTRAINT server_fun_categ_name_key UNIQUE (server_categ_name)
);

CREATE TABLE server_app_categ (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_categ_id BIGINT NOT NULL REFERENCES server_fun_categ (id),
    app_categ_name VARCHAR(64) NOT NULL,
    CONSTRAINT server_app_categ_name_key UNIQUE (server_categ_id, app_categ_name)
);

CREATE TABLE server_list (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_name VARCHAR(255) NOT NULL,
    server_wip VARCHAR(45),
    server_lip VARCHAR(45) NOT NULL,
    server_op VARCHAR(64),
    server_app_id BIGINT REFERENCES server_app_categ (id),
    created_at BIGINT NOT NULL,
    CONSTRAINT server_list_name_key UNIQUE (server_name),
    CONSTRAINT server_list_lip_key UNIQUE (server_lip)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    module_id BIGINT NOT NULL,
    module_version VARCHAR(64) NOT NULL,
    backend VARCHAR(32) NOT NULL,
    params TEXT NOT NULL,
    hosts TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    error TEXT,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX jobs_created_at_idx ON jobs (created_at);

CREATE TABLE job_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    host VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    rc BIGINT,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX job_results_job_idx ON job_results (job_id);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(128) NOT NULL,
    token_hash CHAR(64) NOT NULL,
    role VARCHAR(16) NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash)
);
