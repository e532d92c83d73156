-- Free tags on inventory hosts, beside the original's two category levels (e.g. "prod", "eu-west", "db-primary").
-- Tags are stored trimmed and in lower case by the server, so the unique pair means the same on every database.

CREATE TABLE host_tags (
    host_id BIGINT NOT NULL REFERENCES server_list (id),
    tag VARCHAR(64) NOT NULL,
    CONSTRAINT host_tags_key UNIQUE (host_id, tag)
);
CREATE INDEX host_tags_tag_idx ON host_tags (tag);
