-- Audit search by index (issue 17). Commands are found by substring through an FTS5 table with the trigram
-- tokenizer (case folded), an external-content table over server_history: it stores only the index, and triggers
-- keep it in step with every insert, change and delete of a row, in the same transaction. Time filters get
-- range indexes: received_at (the server's clock) and history_datetime (the host's own time, any host).
-- Building the index reads every stored row once, at this upgrade (see migrations/README.md).

CREATE VIRTUAL TABLE server_history_text USING fts5(
    history_command,
    content = 'server_history',
    content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO server_history_text (server_history_text) VALUES ('rebuild');

CREATE TRIGGER server_history_text_insert AFTER INSERT ON server_history BEGIN
    INSERT INTO server_history_text (rowid, history_command) VALUES (new.id, new.history_command);
END;
CREATE TRIGGER server_history_text_delete AFTER DELETE ON server_history BEGIN
    INSERT INTO server_history_text (server_history_text, rowid, history_command)
        VALUES ('delete', old.id, old.history_command);
END;
CREATE TRIGGER server_history_text_update AFTER UPDATE OF history_command ON server_history BEGIN
    INSERT INTO server_history_text (server_history_text, rowid, history_command)
        VALUES ('delete', old.id, old.history_command);
    INSERT INTO server_history_text (rowid, history_command) VALUES (new.id, new.history_command);
END;

CREATE INDEX server_history_received_idx ON server_history (received_at);
CREATE INDEX server_history_time_idx ON server_history (history_datetime);
-- The user filter also matches the login user, stored as `name(uid)`: by value and by the range
-- `name(`..`name)`.
CREATE INDEX server_history_login_idx ON server_history (login_user);
