-- Replaces junction_insert_events: rows come grouped by store, with `ends[i]` the (1-based) index
-- of the last row of `stores[i]`, so that each store's INSERT unnests only its own rows. The old
-- function unnested every row of the group once per store (and filtered), which made a group
-- commit of many stores quadratic: with 64 single-event writers, most of the commit's CPU.
-- Each store still costs one dynamic statement (parsed and planned every time): with
-- per-store tables, that is the floor of a group commit's cost (see BENCHMARKS.md).
DROP FUNCTION junction_insert_events(BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[]);

CREATE FUNCTION junction_insert_store_events(
    stores    BIGINT[],
    ends      INTEGER[],
    seqs      BIGINT[],
    parents   BIGINT[],
    names     TEXT[],
    args      TEXT[],
    clients   TEXT[],
    sessions  TEXT[],
    created   TEXT[],
    positions BIGINT[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i  INTEGER;
    lo INTEGER := 1;
    hi INTEGER;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(stores), 0) LOOP
        hi := ends[i];
        -- Table names are built from the integer ids only. One row (the common case with many
        -- single-event writers) as VALUES: parsed and planned in a third of the time unnest takes.
        IF hi = lo THEN
            EXECUTE format(
                'INSERT INTO eventlog_%s (seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) '
                'VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
                stores[i])
            USING seqs[lo], parents[lo], names[lo], args[lo], clients[lo], sessions[lo], created[lo], positions[lo];
        ELSE
            EXECUTE format(
                'INSERT INTO eventlog_%s (seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) '
                'SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)',
                stores[i])
            USING seqs[lo:hi], parents[lo:hi], names[lo:hi], args[lo:hi], clients[lo:hi], sessions[lo:hi],
                  created[lo:hi], positions[lo:hi];
        END IF;
        lo := hi + 1;
    END LOOP;
END
$$;
