-- 0003_fast_path: the write path in fewer round trips and fewer fsyncs.
--
-- On a loaded 2-core machine every client/server round trip costs 0.2-0.5 ms
-- (process wake-ups), far more than the statements themselves. The sidecar's
-- hot writes therefore become ONE statement each, run in autocommit:
--  * rale.log_append: a Raft persist (append, truncate on conflict, hard state);
--  * rale.apply_entries: applying a batch of committed entries, exactly once;
-- and rale.submit commits its proposal asynchronously (see sidecar/src/pg/DESIGN.md).
-- Never edit this file once released: add a new numbered migration instead.

-------------------------------------------------------------------------------
-- Persist: what PgLogStorage.persist did in five statements, in one. Runs as
-- one implicit transaction with synchronous_commit = on (forced on the log's
-- connections): all of it is durable when the call returns, or none of it.
-------------------------------------------------------------------------------

CREATE FUNCTION rale.log_append(
    p_index       bigint[],
    p_term        bigint[],
    p_kind        smallint[],
    p_data        bytea[],
    p_leader      text[],
    p_hard_term   bigint,
    p_hard_vote   text,
    p_hard_commit bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    snap_index bigint;
    last_index bigint;
    first_new  bigint;
BEGIN
    IF coalesce(cardinality(p_index), 0) > 0 THEN
        SELECT (SELECT s.index FROM rale.snapshot s), (SELECT max(e.index) FROM rale.log_entries e) INTO snap_index, last_index;
        snap_index := coalesce(snap_index, 0);
        last_index := coalesce(last_index, snap_index);
        -- Entries at or below the snapshot are covered by it (committed, identical).
        SELECT min(i) INTO first_new FROM unnest(p_index) AS i WHERE i > snap_index;
        IF first_new IS NOT NULL THEN
            IF first_new > last_index + 1 THEN
                RAISE EXCEPTION 'Persisting entries from index % would leave a hole: the log ends at index %. Entries must start at or before lastIndex + 1 (a driver bug). Nothing was written.',
                    first_new, last_index USING ERRCODE = 'RL001';
            END IF;
            -- Truncate on conflict: the first new entry replaces its index and everything after it.
            IF first_new <= last_index THEN
                DELETE FROM rale.log_entries e WHERE e.index BETWEEN first_new AND last_index;
            END IF;
            INSERT INTO rale.log_entries (index, term, kind, data, leader)
            SELECT u.i, u.t, u.k, u.d, u.l FROM unnest(p_index, p_term, p_kind, p_data, p_leader) AS u(i, t, k, d, l)
            WHERE u.i > snap_index;
        END IF;
    END IF;
    IF p_hard_term IS NOT NULL THEN
        INSERT INTO rale.hard_state (id, term, vote, commit) VALUES (true, p_hard_term, p_hard_vote, p_hard_commit)
        ON CONFLICT (id) DO UPDATE SET term = excluded.term, vote = excluded.vote, commit = excluded.commit;
    END IF;
END
$$;

-------------------------------------------------------------------------------
-- Apply: a batch of committed entries in one statement (one transaction),
-- exactly as PgStateMachine.apply did it statement by statement:
--  * rale.applied is locked first and advanced in the same transaction;
--    entries at or below it are skipped (already applied);
--  * a proposal id already in rale.results, or seen earlier in the batch, is
--    not applied again: that copy answers with the first copy's outcome;
--  * runs of consecutive kv set/delete commands are applied set-based (one
--    statement per run); cas, handler calls and handler registrations one
--    by one, in log order; a handler runs in a subtransaction (a plpgsql
--    exception block is a savepoint): if it raises, its effects roll back and
--    the error becomes the entry's outcome;
--  * outcomes go to rale.results in one statement; pruning as before.
-- The sidecar decodes the entries and validates command shapes (error texts
-- stay where they were); this function does the database work. Per entry:
--   p_action: 'noop' (ok, nothing recorded), 'bad' (undecodable: failed with
--   p_error, nothing recorded), 'config' (ok, its id recorded once),
--   'fail' (a command of the wrong shape: failed with p_error, recorded),
--   'set' (p_key, p_value), 'delete' (p_key), 'cas' (p_key, p_value,
--   p_expected; NULL means "absent"), 'call' (p_key = handler name,
--   p_value = payload), 'register' (p_key = name, p_value = {function, tables}).
-- No SET search_path: handlers run with the session's path, as before, so
-- every rale object here is schema-qualified.
-------------------------------------------------------------------------------

CREATE FUNCTION rale.apply_entries(
    p_index    bigint[],
    p_term     bigint[],
    p_id       text[],
    p_action   text[],
    p_key      text[],
    p_value    jsonb[],
    p_expected jsonb[],
    p_error    text[],
    p_sync     boolean
) RETURNS TABLE (entry_index bigint, outcome_status text, outcome_result jsonb, outcome_error text)
LANGUAGE plpgsql AS $$
DECLARE
    n         integer := coalesce(cardinality(p_index), 0);
    applied   bigint;
    prior     jsonb;
    first_pos integer[];
    o_status  text[];
    o_result  jsonb[];
    o_error   text[];
    o_record  boolean[];
    dup_of    integer[];
    -- the pending run of kv set/delete commands
    r_n       integer := 0;
    r_pos     integer[] := '{}';
    r_op      text[] := '{}';
    r_key     text[] := '{}';
    r_val     jsonb[] := '{}';
    r_idx     bigint[] := '{}';
    f_pos     integer[];
    f_res     jsonb[];
    i         integer;
    k         integer;
    act       text;
    pid       text;
    fn        text;
    res       jsonb;
    cnt       bigint;
    retention bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF NOT p_sync THEN
        -- Safe: the log is the durability point; a lost apply commit takes its
        -- rale.applied update with it and is redone from the log (pg DESIGN).
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    SELECT a.index INTO applied FROM rale.applied a FOR UPDATE;
    applied := coalesce(applied, 0);
    IF p_index[n] <= applied THEN
        RETURN;
    END IF;

    o_status := array_fill(NULL::text, ARRAY[n]);
    o_result := array_fill(NULL::jsonb, ARRAY[n]);
    o_error := array_fill(NULL::text, ARRAY[n]);
    o_record := array_fill(false, ARRAY[n]);
    dup_of := array_fill(NULL::integer, ARRAY[n]);

    -- Outcomes already recorded (retries of proposals applied before).
    -- (A join with unnest, not `= ANY (p_id)`: with the cached generic plan
    -- the latter became a sequential scan of rale.results, 100 ms per batch
    -- at 256 entries; unnest is estimated small and probes the primary key.)
    SELECT coalesce(jsonb_object_agg(r.proposal_id, jsonb_build_array(r.status, r.result, r.error)), '{}')
    INTO prior
    FROM (SELECT DISTINCT u.id FROM unnest(p_id) AS u(id) WHERE u.id IS NOT NULL) ids
    JOIN rale.results r ON r.proposal_id = ids.id;
    -- For every position, the first fresh position holding the same id.
    SELECT array_agg(x.f ORDER BY x.pos) INTO first_pos
    FROM (SELECT u.pos, min(CASE WHEN u.idx > applied THEN u.pos END) OVER (PARTITION BY u.id) AS f
          FROM unnest(p_id, p_index) WITH ORDINALITY AS u(id, idx, pos)) x;

    FOR i IN 1..n LOOP
        CONTINUE WHEN p_index[i] <= applied;
        act := p_action[i];
        pid := p_id[i];
        IF act = 'noop' THEN
            o_status[i] := 'ok';
            CONTINUE;
        ELSIF act = 'bad' THEN
            o_status[i] := 'failed';
            o_error[i] := p_error[i];
            CONTINUE;
        ELSIF act = 'config' THEN
            o_status[i] := 'ok';
            o_record[i] := pid IS NOT NULL AND NOT prior ? pid AND first_pos[i] = i;
            CONTINUE;
        END IF;
        -- A command: applied once per proposal id.
        IF prior ? pid THEN
            o_status[i] := CASE WHEN prior -> pid ->> 0 = 'applied' THEN 'ok' ELSE 'failed' END;
            IF o_status[i] = 'ok' THEN
                o_result[i] := prior -> pid -> 1;
            ELSE
                o_error[i] := coalesce(prior -> pid ->> 2, 'failed');
            END IF;
            CONTINUE;
        END IF;
        IF first_pos[i] < i THEN
            dup_of[i] := first_pos[i]; -- answered below, once the first copy's outcome is known
            CONTINUE;
        END IF;
        o_record[i] := true;
        IF act = 'fail' THEN
            o_status[i] := 'failed';
            o_error[i] := p_error[i];
            CONTINUE;
        ELSIF act IN ('set', 'delete') THEN
            r_n := r_n + 1;
            r_pos[r_n] := i;
            r_op[r_n] := act;
            r_key[r_n] := p_key[i];
            r_val[r_n] := p_value[i];
            r_idx[r_n] := p_index[i];
            CONTINUE;
        END IF;

        -- Anything else may read what the run wrote: apply the run first.
        IF r_n > 0 THEN
            SELECT * INTO f_pos, f_res FROM rale.apply_kv_run(r_pos, r_op, r_key, r_val, r_idx);
            FOR k IN 1..cardinality(f_pos) LOOP
                o_status[f_pos[k]] := 'ok';
                o_result[f_pos[k]] := f_res[k];
            END LOOP;
            r_n := 0; r_pos := '{}'; r_op := '{}'; r_key := '{}'; r_val := '{}'; r_idx := '{}';
        END IF;

        IF act = 'cas' THEN
            IF p_expected[i] IS NULL THEN
                INSERT INTO rale.kv (key, value, version) VALUES (p_key[i], p_value[i], p_index[i]) ON CONFLICT (key) DO NOTHING;
            ELSE
                UPDATE rale.kv SET value = p_value[i], version = p_index[i] WHERE key = p_key[i] AND value = p_expected[i];
            END IF;
            GET DIAGNOSTICS cnt = ROW_COUNT;
            o_status[i] := 'ok';
            IF cnt > 0 THEN
                o_result[i] := '{"ok": true}';
            ELSE
                o_result[i] := jsonb_build_object('ok', false, 'current', (SELECT kv.value FROM rale.kv kv WHERE kv.key = p_key[i]));
            END IF;
        ELSIF act = 'call' THEN
            SELECT to_regprocedure(h.function)::regproc::text INTO fn FROM rale.handlers h WHERE h.name = p_key[i];
            IF NOT FOUND THEN
                o_status[i] := 'failed';
                o_error[i] := format('no handler is registered under the name "%s"', p_key[i]);
            ELSIF fn IS NULL THEN
                o_status[i] := 'failed';
                o_error[i] := format('the function of handler "%s" does not exist on this node', p_key[i]);
            ELSE
                BEGIN
                    -- fn is regproc output: a quoted, schema-qualified identifier.
                    EXECUTE format('SELECT to_jsonb(%s($1::jsonb))', fn) INTO res USING p_value[i];
                    o_status[i] := 'ok';
                    o_result[i] := res;
                EXCEPTION WHEN OTHERS THEN
                    o_status[i] := 'failed';
                    o_error[i] := SQLERRM;
                END;
            END IF;
        ELSIF act = 'register' THEN
            INSERT INTO rale.handlers (name, function, tables, registered_index)
            VALUES (p_key[i], p_value[i] ->> 'function',
                    ARRAY(SELECT jsonb_array_elements_text(coalesce(p_value[i] -> 'tables', '[]'))), p_index[i])
            ON CONFLICT (name) DO UPDATE SET function = EXCLUDED.function, tables = EXCLUDED.tables, registered_index = EXCLUDED.registered_index;
            o_status[i] := 'ok';
            o_result[i] := jsonb_build_object('registered', p_key[i]);
        ELSE
            RAISE EXCEPTION 'rale.apply_entries: unknown action %', act;
        END IF;
    END LOOP;
    IF r_n > 0 THEN
        SELECT * INTO f_pos, f_res FROM rale.apply_kv_run(r_pos, r_op, r_key, r_val, r_idx);
        FOR k IN 1..cardinality(f_pos) LOOP
            o_status[f_pos[k]] := 'ok';
            o_result[f_pos[k]] := f_res[k];
        END LOOP;
    END IF;
    -- Later copies of an id answer with the first copy's outcome, and do nothing.
    FOR i IN 1..n LOOP
        IF dup_of[i] IS NOT NULL THEN
            o_status[i] := o_status[dup_of[i]];
            o_result[i] := o_result[dup_of[i]];
            o_error[i] := o_error[dup_of[i]];
        END IF;
    END LOOP;

    INSERT INTO rale.results (proposal_id, index, term, status, result, error)
    SELECT u.id, u.idx, u.term,
           CASE u.status WHEN 'ok' THEN 'applied' ELSE 'failed' END,
           CASE u.status WHEN 'ok' THEN coalesce(u.result, 'null'::jsonb) END,
           u.error
    FROM unnest(p_id, p_index, p_term, o_status, o_result, o_error, o_record) AS u(id, idx, term, status, result, error, rec)
    WHERE u.rec;

    UPDATE rale.applied SET index = p_index[n], term = p_term[n];
    -- Keep rale.results bounded, deterministically: every 1,000 entries, the
    -- same rows go on every node.
    IF applied / 1000 <> p_index[n] / 1000 THEN
        retention := coalesce((SELECT (s.value #>> '{}')::bigint FROM rale.settings s WHERE s.key = 'results_retention_entries'), 1000000);
        DELETE FROM rale.results r WHERE r.index < (p_index[n] / 1000) * 1000 - retention;
    END IF;

    RETURN QUERY
    SELECT u.idx, u.status, u.result, u.error
    FROM unnest(p_index, o_status, o_result, o_error) AS u(idx, status, result, error)
    WHERE u.idx > applied;
END
$$;

-- One run of kv set/delete commands (in log order, keys may repeat), in one
-- statement. Every key ends as its last command in the run left it; a
-- delete's `existed` is what the entry before it on the same key left, or
-- the table before the run when it is the first on its key. Returns each
-- command's position and result.
CREATE FUNCTION rale.apply_kv_run(p_pos integer[], p_op text[], p_key text[], p_value jsonb[], p_index bigint[],
                                  OUT positions integer[], OUT results jsonb[])
LANGUAGE sql AS $$
    WITH run AS (
        SELECT u.pos, u.op, u.key, u.value, u.idx,
               lag(u.op) OVER (PARTITION BY u.key ORDER BY u.pos) AS prev_op,
               row_number() OVER (PARTITION BY u.key ORDER BY u.pos DESC) AS from_last
        FROM unnest(p_pos, p_op, p_key, p_value, p_index) AS u(pos, op, key, value, idx)
    ),
    -- Every part of one statement sees the table as it was before the statement.
    existing AS (
        SELECT kv.key FROM (SELECT DISTINCT u.key FROM unnest(p_key) AS u(key)) k JOIN rale.kv kv ON kv.key = k.key
    ),
    deleted AS (
        DELETE FROM rale.kv kv USING run r
        WHERE r.from_last = 1 AND r.op = 'delete' AND kv.key = r.key
        RETURNING kv.key
    ),
    written AS (
        INSERT INTO rale.kv (key, value, version)
        SELECT r.key, r.value, r.idx FROM run r WHERE r.from_last = 1 AND r.op = 'set'
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version
        RETURNING kv.key
    )
    SELECT array_agg(r.pos ORDER BY r.pos),
           array_agg(CASE WHEN r.op = 'set' THEN '{"ok": true}'::jsonb
                          ELSE jsonb_build_object('ok', true, 'existed',
                                 CASE WHEN r.prev_op IS NOT NULL THEN r.prev_op = 'set'
                                      ELSE EXISTS (SELECT 1 FROM existing e WHERE e.key = r.key) END)
                     END ORDER BY r.pos)
    FROM run r
$$;

REVOKE ALL ON FUNCTION rale.log_append(bigint[], bigint[], smallint[], bytea[], text[], bigint, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.apply_entries(bigint[], bigint[], text[], text[], text[], jsonb[], jsonb[], text[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.apply_kv_run(integer[], text[], text[], jsonb[], bigint[]) FROM PUBLIC;

-------------------------------------------------------------------------------
-- CALL rale.submit: the proposal's own transaction commits asynchronously.
-- Safe because nothing is promised at that commit: the answer is the outcome
-- rale.wait returns, which exists only once the entry is in a durable Raft
-- log on a majority and applied here. A crash that loses the proposal row
-- before the pump took it loses a proposal nobody was told about (the
-- caller's connection dies with the server, and rale.wait(id) later says
-- 'unknown'); one the pump already handed to Raft applies and is recorded
-- under its id. The procedure's transaction holds nothing but the proposal
-- (CALL runs outside any transaction block), so no caller data is weakened.
-- rale.propose itself keeps synchronous commit: it runs in the CALLER's
-- transaction, whose other writes must stay as durable as the caller asked.
-------------------------------------------------------------------------------

CREATE OR REPLACE PROCEDURE rale.submit(command jsonb, INOUT outcome rale.outcome DEFAULT NULL, timeout_ms integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid;
BEGIN
    new_id := rale.propose(command);
    PERFORM set_config('synchronous_commit', 'off', true);
    COMMIT;
    outcome := rale.wait(new_id, timeout_ms);
END
$$;

-------------------------------------------------------------------------------
-- Waking the pump: the flag is read when the proposer COMMITS (a deferred
-- constraint trigger), no longer when it inserts. A proposal made early in a
-- long transaction, while the pump was busy, used to find the flag false,
-- send nothing, and commit after the pump had gone to sleep: its waiter then
-- waited for the pump's idle timeout (up to 1 s). Read at commit, the window
-- left is the instant between the check and the commit itself, which the
-- pump covers with one more look shortly after it goes to sleep (pump.ts).
-- Still one NOTIFY per transaction at most (PostgreSQL folds identical
-- notifications of a transaction into one), and none while the pump is busy.
-------------------------------------------------------------------------------

DROP TRIGGER proposals_wake ON rale.proposals;
CREATE CONSTRAINT TRIGGER proposals_wake AFTER INSERT ON rale.proposals
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rale.wake_pump();
