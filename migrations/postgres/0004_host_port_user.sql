-- Per-host SSH port and login user (used by the ssh and ansible backends; NULL means the backend's default).
-- The same change in every dialect.

ALTER TABLE server_list ADD COLUMN server_port INTEGER, ADD COLUMN server_user VARCHAR(32);
