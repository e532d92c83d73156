-- Audit search by index (issue 17). Commands are found by substring through an FTS5 table with the trigram
-- tokenizer (case folded): an external-content table over server_history, so it stores only the index, with
-- positions, so that a term is found as a phrase of its trigrams, in order (without them, a term made of common
-- trigrams, such as an address, matched every row holding them anywhere). Rows are indexed off the audit
-- writer's path, by the `audit-index` thread, in id order;
-- `audit_text_position` holds the highest id indexed, and a search reads the rows above it by scanning them.
-- The triggers keep the index true when an indexed row is changed or deleted (retention, or tampering that
-- `audit verify` reports). Building the index reads every stored row once, at this upgrade
-- (see migrations/README.md).

CREATE VIRTUAL TABLE server_history_text USING fts5(
    history_command,
    content = 'server_history',
    content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO server_history_text (server_history_text) VALUES ('rebuild');

CREATE TABLE audit_text_position (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    position BIGINT NOT NULL
);
INSERT INTO audit_text_position (only_row, position) SELECT 1, COALESCE(MAX(id), 0) FROM server_history;

CREATE TRIGGER server_history_text_delete AFTER DELETE ON server_history
WHEN old.id <= (SELECT position FROM audit_text_position) BEGIN
    INSERT INTO server_history_text (server_history_text, rowid, history_command)
        VALUES ('delete', old.id, old.history_command);
END;
CREATE TRIGGER server_history_text_update AFTER UPDATE OF history_command ON server_history
WHEN old.id <= (SELECT position FROM audit_text_position) BEGIN
    INSERT INTO server_history_text (server_history_text, rowid, history_command)
        VALUES ('delete', old.id, old.history_command);
    INSERT INTO server_history_text (rowid, history_command) VALUES (new.id, new.history_command);
END;

CREATE INDEX server_history_received_idx ON server_history (received_at);
CREATE INDEX server_history_time_idx ON server_history (history_datetime);
-- The user filter also matches the login user, stored as `name(uid)`: by value and by the range
-- `name(`..`name)`.
CREATE INDEX server_history_login_idx ON server_history (login_user);
