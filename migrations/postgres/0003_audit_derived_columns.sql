-- Audit rows without the columns that can be derived, and without the second foreign key (the same change in
-- every dialect; migrations/sqlite/0003 says why). Rows written before still verify: row MACs are unchanged.

ALTER TABLE server_history DROP CONSTRAINT server_history_history_ip_fkey;
ALTER TABLE server_history DROP COLUMN dedup_key, DROP COLUMN prev_hash;
