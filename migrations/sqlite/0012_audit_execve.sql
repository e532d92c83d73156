-- Kernel-captured execs beside typed history lines (omaudit-agent watch, source = 'execve'): the audit session
-- id (also sent with history lines, so a typed line can be linked to what its session ran), the argument vector
-- (JSON: a string per argument, {"hex": …} for one that is not UTF-8), the working directory, the executable and
-- the exec's result (0, or the negative errno of a failed exec), and its process ids (pid, parent, effective uid,
-- login uid). NULL on every row written before and on history rows (but session). The same change in every
-- dialect; row MACs of older rows are unchanged.

ALTER TABLE server_history ADD COLUMN session BIGINT;
ALTER TABLE server_history ADD COLUMN argv TEXT;
ALTER TABLE server_history ADD COLUMN cwd TEXT;
ALTER TABLE server_history ADD COLUMN exe TEXT;
ALTER TABLE server_history ADD COLUMN exit_code BIGINT;
ALTER TABLE server_history ADD COLUMN pid BIGINT;
ALTER TABLE server_history ADD COLUMN ppid BIGINT;
ALTER TABLE server_history ADD COLUMN euid BIGINT;
ALTER TABLE server_history ADD COLUMN auid BIGINT;
CREATE INDEX server_history_session_idx ON server_history (host_id, session);
