-- People who log in to the console, their server-side sessions, and tokens that belong to a user.
-- User names are stored normalised (trimmed, lower case, checked) by the server, so that the unique constraint
-- means the same on every database, whatever its collation. Only a keyed hash of each session id is stored.
-- A token without a user (every token made before this migration) keeps working with its own role.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(64) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role VARCHAR(16) NOT NULL,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    CONSTRAINT users_name_key UNIQUE (name)
);

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_hash CHAR(64) NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    csrf_token CHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    CONSTRAINT sessions_hash_key UNIQUE (session_hash)
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

ALTER TABLE api_tokens ADD COLUMN user_id BIGINT REFERENCES users (id);
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
