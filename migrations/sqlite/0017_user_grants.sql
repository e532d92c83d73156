-- Grants: where a user's role applies. On each host a user has the highest role of its grants that cover the
-- host, never above `users.role`; a host no grant covers is not theirs (an admin is never limited). A grant
-- covers part of the inventory (function categories, app categories, tags) and may name the only modules or
-- saved jobs it runs. `spec` is that selector as JSON ({"functions", "apps", "tags", "modules", "templates"}),
-- read whole and matched in the server, on every database alike; `{}` covers everything. `role` NULL: the
-- user's own role, whatever it becomes.
--
-- Every user had its role on every host until now: each gets the grant that says so, and so does every user
-- created from now on. An admin narrows a user by adding grants and removing that one.

CREATE TABLE user_grants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id),
    role VARCHAR(16),
    spec TEXT NOT NULL,
    created_by VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX user_grants_user_idx ON user_grants (user_id);

INSERT INTO user_grants (user_id, role, spec, created_by, created_at)
    SELECT id, NULL, '{}', 'upgrade', CAST(strftime('%s', 'now') AS BIGINT) * 1000 FROM users;
