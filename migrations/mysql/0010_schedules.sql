-- Schedules of saved jobs and every fire of each. A fire is claimed by inserting its (schedule, slot) row before its
-- job is created, so a slot never fires twice: not across restarts, nor across servers sharing the database.
-- `active_from` is when the schedule last became active (created, enabled, or its timing edited): slots before it
-- are not counted as missed. Outcomes: claimed (in progress), queued, fired, skipped, missed, failed.

CREATE TABLE schedules (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(128) NOT NULL,
    template_id BIGINT NOT NULL,
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
    CONSTRAINT schedules_name_key UNIQUE (name),
    CONSTRAINT schedules_template_fk FOREIGN KEY (template_id) REFERENCES job_templates (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX schedules_template_idx ON schedules (template_id);

CREATE TABLE schedule_fires (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    schedule_id BIGINT NOT NULL,
    slot BIGINT NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    job_id BIGINT,
    reason TEXT,
    recorded_at BIGINT NOT NULL,
    CONSTRAINT schedule_fires_slot_key UNIQUE (schedule_id, slot),
    CONSTRAINT schedule_fires_schedule_fk FOREIGN KEY (schedule_id) REFERENCES schedules (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
