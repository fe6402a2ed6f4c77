-- Every store's events in one table keyed by (store_id, seq), instead of a table eventlog_<id>
-- per store (the Postgres migration of the same name says why). Clustered on the key, so one
-- store's events are still read as one range. The events of existing eventlog_<id> tables are
-- moved by the server right after this migration (SqliteStore::migrate): SQL alone cannot name
-- tables it finds at run time.
CREATE TABLE events (
    store_id   INTEGER NOT NULL REFERENCES stores (id),
    seq        INTEGER NOT NULL,
    parent_seq INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    args       TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    session_id TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    change_pos INTEGER NOT NULL,
    PRIMARY KEY (store_id, seq)
) WITHOUT ROWID;
