-- Projection snapshots: a protocol's folded state of one store up to `seq`, so that loading a
-- document reads the snapshot and the events after it instead of the whole history. A snapshot
-- is a cache of the log: it is only used while the store's backend id is the one it was made
-- for, and a reset deletes it.
CREATE TABLE snapshots (
    store_id   INTEGER PRIMARY KEY REFERENCES stores (id),
    backend_id TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
