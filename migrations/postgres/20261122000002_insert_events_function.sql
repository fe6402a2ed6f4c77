-- Inserts the events of a whole commit group, for any number of stores, in one round trip.
-- Rows are given as parallel arrays; `stores` says which store (and so which eventlog_<id>
-- table) each row belongs to. Table names are built from the integer ids only.
CREATE FUNCTION junction_insert_events(
    stores    BIGINT[],
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
    store BIGINT;
BEGIN
    FOR store IN SELECT DISTINCT s FROM unnest(stores) AS s LOOP
        EXECUTE format(
            'INSERT INTO eventlog_%s (seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) '
            'SELECT u.seq, u.parent, u.name, u.args, u.client, u.session, u.created, u.pos '
            'FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) '
            'AS u(store, seq, parent, name, args, client, session, created, pos) WHERE u.store = $10',
            store)
        USING stores, seqs, parents, names, args, clients, sessions, created, positions, store;
    END LOOP;
END
$$;
