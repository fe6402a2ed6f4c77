-- Every store's events in one table keyed by (store_id, seq), instead of a table eventlog_<id>
-- per store. With a table per store, a commit group cost one dynamic INSERT per store, parsed
-- and planned anew each time: with 64 single-event writers that was most of Postgres's time and
-- held a group commit to about 2,700 events/s (BENCHMARKS.md). One table takes a whole group in
-- one prepared INSERT … SELECT FROM unnest, whatever the number of stores.
--
-- No foreign key to stores, here or on changes (dropped below): Postgres checks one with a query
-- per inserted row, run inside the commit group's transaction (a quarter of Postgres's time with
-- 64 single-event writers). The commit group holds the row lock of every store it writes, and
-- stores are never deleted, so the key cannot dangle.
CREATE TABLE events (
    store_id   BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    parent_seq BIGINT NOT NULL,
    name       TEXT   NOT NULL,
    args       TEXT   NOT NULL,
    client_id  TEXT   NOT NULL,
    session_id TEXT   NOT NULL,
    created_at TEXT   NOT NULL,
    change_pos BIGINT NOT NULL,
    PRIMARY KEY (store_id, seq)
);

-- Move the events of every existing store, then drop its table. A store whose table is missing
-- (none should be) is skipped rather than failing the migration.
DO $$
DECLARE
    store BIGINT;
BEGIN
    FOR store IN SELECT id FROM stores ORDER BY id LOOP
        IF to_regclass(format('eventlog_%s', store)) IS NOT NULL THEN
            EXECUTE format(
                'INSERT INTO events (store_id, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) '
                'SELECT %s, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos '
                'FROM eventlog_%s ORDER BY seq',
                store, store);
            EXECUTE format('DROP TABLE eventlog_%s', store);
        END IF;
    END LOOP;
END
$$;

ALTER TABLE changes DROP CONSTRAINT changes_store_id_fkey;

DROP FUNCTION junction_insert_store_events(BIGINT[], INTEGER[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[]);
