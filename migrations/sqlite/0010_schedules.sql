-- Schedules of saved jobs and every fire of each. A fire is claimed by inserting its (schedule, slot) row before its
-- job is created, so a slot never fires twice: not across restarts, nor across servers sharing the database.
-- `active_from` is when the schedule last became active (created, enabled, or its timing edited): slots before it
-- are not counted as missed. Outcomes: claimed (in progress), queued, fired, skipped, missed, failed.

CREATE TABLE schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(128) NOT NULL,
    template_id BIGINT NOT NULL REFERENCES job_templates (id),
    cron VARCHAR(256) NOT NULL,
    timezone VARCHAR(64) NOT NULL,
    enabled BIGINT NOT NULL,
    overlap VARCHAR(8) NOT NULL,
    catch_up_secs BIGINT NOT NULL,
    active_from BIGINT NOT NULL,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by VARCHAR(128) NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT schedules_name_key UNIQUE (name)
);
CREATE INDEX schedules_template_idx ON schedules (template_id);

CREATE TABLE schedule_fires (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id BIGINT NOT NULL REFERENCES schedules (id),
    slot BIGINT NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    job_id BIGINT,
    reason TEXT,
    recorded_at BIGINT NOT NULL,
    CONSTRAINT schedule_fires_slot_key UNIQUE (schedule_id, slot)
);
