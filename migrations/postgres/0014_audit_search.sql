-- Audit search by index (issue 17). Commands are found by substring through a pg_trgm GIN index (trigrams,
-- case folded; `ILIKE '%…%'` uses it). pg_trgm ships with PostgreSQL (Debian: postgresql-contrib) and is a
-- trusted extension: a database owner may create it. Time filters get range indexes: received_at (the server's
-- clock) and history_datetime (the host's own time, any host). Building the GIN index reads every stored row
-- once, at this upgrade (see migrations/README.md).

CREATE EXTENSION IF NOT EXISTS pg_trgm;
-- Inserts add to the index's pending list (fastupdate), which autovacuum merges into the index in the
-- background, rather than each insert updating the index's trees; 32 MB of pending entries instead of the
-- default 4 MB means fewer inserts pay for a merge. Searches read the pending list as well. Batch ingest still
-- runs at less than half its speed without the index (BENCHMARKS.md, "Audit search").
CREATE INDEX server_history_command_trgm_idx ON server_history USING gin (history_command gin_trgm_ops)
    WITH (fastupdate = on, gin_pending_list_limit = 32768);
CREATE INDEX server_history_received_idx ON server_history (received_at);
CREATE INDEX server_history_time_idx ON server_history (history_datetime);
-- The user filter also matches the login user, stored as `name(uid)`: by value and by the range
-- `name(`..`name)` (in byte order, COLLATE "C", as the query compares it).
CREATE INDEX server_history_login_idx ON server_history (login_user COLLATE "C");
