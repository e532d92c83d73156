-- Failed logins, counted per user name and per client address (the rule is in host/src/users/throttle.rs), in
-- the database so that every server of it counts the same failures: guesses spread over servers are slowed as
-- if sent to one. `subject` is a keyed hash (HMAC under a key derived from the secret key) of what is counted,
-- never the name itself: a name as typed may be a password typed into the wrong field. A failure is counted by
-- one atomic upsert; a row is forgotten 15 minutes (by default) after its last failure and deleted by each
-- server's periodic sweep, so the table holds only recent failures and needs no index but its key.

CREATE TABLE login_throttle (
    subject VARCHAR(64) NOT NULL PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failed_at BIGINT NOT NULL
);
