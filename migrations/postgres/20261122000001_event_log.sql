-- The store registry: one row per store, named by protocol and the client's name for it.
-- Each store's events live in their own table eventlog_<id>, created by the server when the
-- store is first used (the name comes from the id, never from client input).
CREATE TABLE stores (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    protocol    TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    head        BIGINT NOT NULL DEFAULT 0,
    backend_id  TEXT   NOT NULL,
    event_count BIGINT NOT NULL DEFAULT 0,
    created_at  TEXT   NOT NULL,
    UNIQUE (protocol, name)
);

-- The sequenced change log: one row per committed batch, in commit order over all stores.
CREATE TABLE changes (
    position    BIGINT PRIMARY KEY,
    store_id    BIGINT NOT NULL REFERENCES stores (id),
    first_seq   BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL,
    event_count INTEGER NOT NULL,
    created_at  TEXT   NOT NULL
);
CREATE INDEX changes_by_store ON changes (store_id, position);

-- The last position handed out. A single row: every append transaction takes its positions
-- here and holds the row lock until it commits, so positions become visible in order and a
-- reader of the change log that has seen position N has seen everything before N.
CREATE TABLE change_log_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT  NOT NULL
);
INSERT INTO change_log_head (id, position) VALUES (1, 0);
