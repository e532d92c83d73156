-- People who log in to the console, their server-side sessions, and tokens that belong to a user.
-- User names are stored normalised (trimmed, lower case, checked) by the server, so that the unique constraint
-- means the same on every database, whatever its collation (MariaDB's default one ignores case). Only a keyed
-- hash of each session id is stored. A token without a user (every token made before this migration) keeps
-- working with its own role.

CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role VARCHAR(16) NOT NULL,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    CONSTRAINT users_name_key UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE sessions (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_hash CHAR(64) NOT NULL,
    user_id BIGINT NOT NULL,
    csrf_token CHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    CONSTRAINT sessions_hash_key UNIQUE (session_hash),
    CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

ALTER TABLE api_tokens ADD COLUMN user_id BIGINT NULL, ADD COLUMN last_used_at BIGINT NULL;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
