-- How many times archived audit rows were put back (`omserver audit restore`). A restore puts rows back with their
-- old ids, below rows already stored: a search that remembered where a set of hosts' newest row lies (SQLite, for
-- a scoped caller's hosts) trusts that only while this number is the one it read (`store/audit_search.rs`).

CREATE TABLE audit_restores (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    generation BIGINT NOT NULL
);
INSERT INTO audit_restores (only_row, generation) VALUES (1, 0);
