-- Audit search by index (issue 17), MariaDB/MySQL part: range indexes for the time filters, received_at (the
-- server's clock) and history_datetime (the host's own time, any host). MariaDB has no trigram index of its own
-- (InnoDB's FULLTEXT finds words, not substrings), so a command search here reads a bounded window of the newest
-- rows and says so; see README.md's "Audit search" for what differs.

CREATE INDEX server_history_received_idx ON server_history (received_at);
CREATE INDEX server_history_time_idx ON server_history (history_datetime);
-- The user filter also matches the login user, stored as `name(uid)`: by value and by the range
-- `name(`..`name)`.
CREATE INDEX server_history_login_idx ON server_history (login_user);
