-- Free tags on inventory hosts, beside the original's two category levels (e.g. "prod", "eu-west", "db-primary").
-- Tags are stored trimmed and in lower case by the server, so the unique pair means the same on every database.

CREATE TABLE host_tags (
    host_id BIGINT NOT NULL,
    tag VARCHAR(64) NOT NULL,
    CONSTRAINT host_tags_key UNIQUE (host_id, tag),
    CONSTRAINT host_tags_host_fk FOREIGN KEY (host_id) REFERENCES server_list (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX host_tags_tag_idx ON host_tags (tag);
