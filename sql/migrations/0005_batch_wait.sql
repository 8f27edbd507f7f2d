-- 0005_batch_wait: rale.wait blocks on one advisory lock per pump batch
-- instead of probing the proposal's row.
--
-- Before: the pump took a batch FOR UPDATE in a transaction it kept open
-- until the batch was applied here, and rale.wait waited for that row lock
-- (FOR SHARE NOWAIT probes, then a blocking FOR SHARE, each in a
-- subtransaction). A row lock writes the row (its xmax): every probe cost
-- a transaction id, a WAL record and a dirtied page, and at 64 clients
-- about 1 ms of the leader's server CPU per proposal went to them
-- (sidecar/src/pg/DESIGN.md, "Where the leader's server CPU goes").
--
-- Now: the pump numbers each batch and commits its take at once (state
-- 'submitted', batch = its number), after taking a session advisory lock
-- ("ralb", batch) on the batch's connection; the lock is released once the
-- batch is applied on this node (or the pump gives up waiting, and resubmits
-- later). A waiter who sees its row in batch B waits for that lock, shared:
-- a lock-manager wait, which writes nothing. The lock is taken before the
-- take commits, so a waiter who can see batch = B finds it held, or already
-- released after the apply.
--
-- Batch numbers are 1..2^31-1, cycled from a random start at every pump
-- start. A waiter that meets a number reused by a later batch only waits for
-- the wrong batch: it wakes when that one is applied and looks again.
-- Never edit this file once released: add a new numbered migration instead.

ALTER TABLE rale.proposals ADD COLUMN batch integer;

CREATE OR REPLACE FUNCTION rale.wait(proposal uuid, timeout_ms integer DEFAULT 5000) RETURNS rale.outcome
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    deadline  timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    pause     double precision := 0.001;
    remaining double precision;
    -- The batch whose lock this call already waited for.
    waited    integer;
    gate_open boolean;
    r         rale.results%ROWTYPE;
    p         rale.proposals%ROWTYPE;
    out       rale.outcome;
BEGIN
    IF proposal IS NULL THEN
        RAISE EXCEPTION 'rale: wait needs a proposal id' USING ERRCODE = '22004';
    END IF;
    IF timeout_ms IS NULL THEN
        RAISE EXCEPTION 'rale: wait needs a timeout_ms (milliseconds; 0 returns the outcome as it is now)' USING ERRCODE = '22004';
    END IF;
    IF EXISTS (SELECT 1 FROM rale.proposals
               WHERE id = proposal AND xmin::text::bigint = txid_current_if_assigned() % 4294967296) THEN
        RAISE EXCEPTION 'rale: proposal % was made in this same transaction; it is only proposed when the transaction commits', proposal
            USING ERRCODE = '25000',
                  HINT = 'COMMIT first and call rale_wait in a new transaction, or use CALL rale.submit(command, NULL) to propose and wait in one statement.';
    END IF;
    LOOP
        -- rale.outcome_of's two looks, inline: the row read here also says what to wait for.
        SELECT * INTO r FROM rale.results WHERE proposal_id = proposal::text;
        IF FOUND THEN
            out := (r.status, r.index, r.term, r.result, r.error);
            RETURN out;
        END IF;
        SELECT * INTO p FROM rale.proposals WHERE id = proposal;
        IF NOT FOUND THEN
            -- Unknown, or applied and cleaned up between the two looks: outcome_of looks again.
            RETURN rale.outcome_of(proposal);
        END IF;
        IF p.state = 'rejected' THEN
            out := ('failed', NULL, NULL, NULL, p.error);
            RETURN out;
        END IF;
        remaining := extract(epoch FROM deadline - clock_timestamp()) * 1000;
        IF remaining <= 0 THEN
            out := rale.outcome_of(proposal);
            IF out.status IN ('pending', 'committed') THEN
                out.status := 'timed_out';
            END IF;
            RETURN out;
        END IF;
        IF p.state = 'submitted' AND p.batch IS NOT NULL AND p.batch IS DISTINCT FROM waited THEN
            -- In Raft, in batch p.batch: wait until the pump lets the batch
            -- go (applied here). Shared, in a subtransaction rolled back at
            -- once: never kept. A lock_timeout is the caller's own timeout.
            waited := p.batch;
            BEGIN
                PERFORM set_config('lock_timeout', greatest(ceil(remaining), 1)::integer || 'ms', true);
                PERFORM pg_advisory_xact_lock_shared(1918987362, p.batch);
                RAISE SQLSTATE 'RL000';
            EXCEPTION
                WHEN SQLSTATE 'RL000' OR lock_not_available THEN NULL;
            END;
            pause := 0.001;
        ELSE
            -- Pending (not taken yet), or submitted in a batch that was let
            -- go without a result here (the pump stopped waiting for it and
            -- resubmits it later, or the row predates batch numbers). The pump
            -- holds the pick gate (advisory lock "rale", 3) and lets waiters
            -- through each time it takes rows: wait for it (shared, in a
            -- subtransaction rolled back at once, at most 25 ms), then look
            -- again. Open gate (the pump is failing, or the sidecar is down):
            -- pause, backing off to 5 ms.
            gate_open := false;
            BEGIN
                IF pg_try_advisory_xact_lock_shared(1918987365, 3) THEN
                    gate_open := true;
                ELSE
                    PERFORM set_config('lock_timeout', least(greatest(ceil(remaining), 1), 25)::integer || 'ms', true);
                    PERFORM pg_advisory_xact_lock_shared(1918987365, 3);
                END IF;
                RAISE SQLSTATE 'RL000';
            EXCEPTION
                WHEN SQLSTATE 'RL000' OR lock_not_available THEN NULL;
            END;
            IF gate_open THEN
                PERFORM pg_sleep(pause);
                pause := least(pause * 2, 0.005);
            ELSE
                pause := 0.001;
            END IF;
        END IF;
    END LOOP;
END
$$;

-------------------------------------------------------------------------------
-- Plans, not statements, were the pump's and the apply's cost at low load
-- (pg_stat_statements with track_planning, one client): the pump's take, a
-- statement with three CTEs sent as text, was planned on every look (about
-- 340 us of planning against 100 us of execution, three looks per
-- proposal), and apply_kv_run, a LANGUAGE sql function, re-planned its
-- statement on every call (about 440 us). Statements inside plpgsql
-- functions keep their plans for the session: both move into plpgsql.
-------------------------------------------------------------------------------

-- The pump's take (sidecar/src/pg/pump.ts): marks up to p_limit proposals
-- `submitted` in batch p_batch and takes the batch's session advisory lock
-- ("ralb", p_batch) when it took at least one row, in the caller's
-- transaction (the lock is taken before that transaction commits, which is
-- what makes the number visible to waiters). Pending rows, oldest first;
-- with p_stale_after_ms, also submitted rows older than that with no result
-- (resubmissions: the pump asks for them now and then, as that look scans
-- the outbox while pending rows have an index of their own). Rows another
-- statement holds are skipped (taken next time).
CREATE FUNCTION rale.pump_take(p_batch integer, p_limit integer, p_stale_after_ms integer)
RETURNS TABLE (id uuid, command jsonb, kind text)
LANGUAGE plpgsql AS $$
DECLARE
    taken integer;
BEGIN
    IF p_batch IS NULL OR p_batch < 1 OR p_limit IS NULL OR p_limit < 1 OR p_stale_after_ms < 1 THEN
        RAISE EXCEPTION 'rale.pump_take: bad arguments (batch %, limit %, stale_after_ms %)', p_batch, p_limit, p_stale_after_ms USING ERRCODE = '22023';
    END IF;
    IF p_stale_after_ms IS NULL THEN
        RETURN QUERY
        WITH picked AS (
            SELECT p.id FROM rale.proposals p WHERE p.state = 'pending'
            ORDER BY p.created_at LIMIT p_limit
            FOR UPDATE SKIP LOCKED),
        taken_rows AS (
            UPDATE rale.proposals p
            SET state = 'submitted', submitted_at = clock_timestamp(), attempts = p.attempts + 1, batch = p_batch, index = NULL, term = NULL
            FROM picked WHERE p.id = picked.id
            RETURNING p.id, p.command, p.kind, p.created_at)
        SELECT t.id, t.command, t.kind FROM taken_rows t ORDER BY t.created_at;
    ELSE
        RETURN QUERY
        WITH picked AS (
            SELECT p.id FROM rale.proposals p
            WHERE p.state = 'pending'
               OR (p.state = 'submitted' AND p.submitted_at < clock_timestamp() - make_interval(secs => p_stale_after_ms / 1000.0)
                   AND NOT EXISTS (SELECT 1 FROM rale.results r WHERE r.proposal_id = p.id::text))
            ORDER BY p.created_at LIMIT p_limit
            FOR UPDATE SKIP LOCKED),
        taken_rows AS (
            UPDATE rale.proposals p
            SET state = 'submitted', submitted_at = clock_timestamp(), attempts = p.attempts + 1, batch = p_batch, index = NULL, term = NULL
            FROM picked WHERE p.id = picked.id
            RETURNING p.id, p.command, p.kind, p.created_at)
        SELECT t.id, t.command, t.kind FROM taken_rows t ORDER BY t.created_at;
    END IF;
    GET DIAGNOSTICS taken = ROW_COUNT;
    -- Never waits: a number whose lock another session holds (anyone may
    -- take advisory locks) fails the take, which rolls back; the pump
    -- reports it and takes again under the next number.
    IF taken > 0 AND NOT pg_try_advisory_lock(1918987362, p_batch) THEN
        RAISE EXCEPTION 'rale.pump_take: the lock of batch % ("ralb", %) is held by another session', p_batch, p_batch
            USING ERRCODE = '55P03', HINT = 'See pg_locks for advisory locks with classid 1918987362; rale''s own are released when their batch is applied.';
    END IF;
END
$$;

-- The pump's let-go (pump.ts): releases the batch's lock, which wakes its
-- waiters (their results are committed: the batch was applied here), then
-- records where the batch's proposals went in the log (for outcome_of's
-- 'committed' and for DBAs; waiters do not need it, so it comes second).
CREATE FUNCTION rale.pump_let_go(p_batch integer, p_ids uuid[], p_index bigint[], p_term bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_unlock(1918987362, p_batch);
    IF coalesce(cardinality(p_ids), 0) > 0 THEN
        UPDATE rale.proposals p SET index = u.index, term = u.term
        FROM unnest(p_ids, p_index, p_term) AS u(id, index, term)
        WHERE p.id = u.id AND p.batch = p_batch;
    END IF;
END
$$;

-- apply_kv_run, same behaviour, in plpgsql (see above). Its plan is forced
-- generic: with the arrays' real lengths known, every custom plan looked
-- cheaper than the generic one, so plpgsql re-planned on every call as well.
-- The generic plan assumes a few elements per array: nested loops over
-- rale.kv's primary key, which is also right for runs of hundreds.
CREATE OR REPLACE FUNCTION rale.apply_kv_run(p_pos integer[], p_op text[], p_key text[], p_value jsonb[], p_index bigint[],
                                             OUT positions integer[], OUT results jsonb[])
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
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
    INTO positions, results
    FROM run r;
END
$$;


-------------------------------------------------------------------------------
-- apply_entries with fast paths: at one client every batch is one kv entry,
-- and it went through the whole general machinery (duplicate bookkeeping
-- over arrays, the per-entry loop, a set-based run for one row): about
-- 700 us of the server's time on each node. The general body below is the
-- one of 0003_fast_path.sql, unchanged; the fast paths come first and give
-- the same outcomes and the same rows (test/pg/apply.test.ts compares).
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rale.apply_entries(
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
    plain     boolean;
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

    -- Fast paths (0005): every entry fresh, a kv set or delete with an id
    -- of its own that was never applied: no per-entry loop, no duplicate
    -- bookkeeping. One such entry (the usual case at low load) is one
    -- statement on rale.kv.
    IF p_index[1] > applied THEN
        IF n = 1 THEN
            plain := p_action[1] IN ('set', 'delete') AND p_id[1] IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM rale.results r WHERE r.proposal_id = p_id[1]);
        ELSE
            SELECT bool_and(u.act IN ('set', 'delete') AND u.id IS NOT NULL) AND count(DISTINCT u.id) = n
                   AND NOT EXISTS (SELECT 1 FROM unnest(p_id) AS v(id) JOIN rale.results r ON r.proposal_id = v.id)
            INTO plain
            FROM unnest(p_action, p_id) AS u(act, id);
        END IF;
        IF plain THEN
            IF n = 1 THEN
                IF p_action[1] = 'set' THEN
                    INSERT INTO rale.kv (key, value, version) VALUES (p_key[1], p_value[1], p_index[1])
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version;
                    res := '{"ok": true}';
                ELSE
                    DELETE FROM rale.kv WHERE key = p_key[1];
                    GET DIAGNOSTICS cnt = ROW_COUNT;
                    res := jsonb_build_object('ok', true, 'existed', cnt > 0);
                END IF;
                f_res := ARRAY[res];
            ELSE
                SELECT * INTO f_pos, f_res FROM rale.apply_kv_run(ARRAY(SELECT generate_series(1, n)), p_action, p_key, p_value, p_index);
            END IF;
            INSERT INTO rale.results (proposal_id, index, term, status, result, error)
            SELECT u.id, u.idx, u.term, 'applied', u.res, NULL
            FROM unnest(p_id, p_index, p_term, f_res) AS u(id, idx, term, res);
            UPDATE rale.applied SET index = p_index[n], term = p_term[n];
            IF applied / 1000 <> p_index[n] / 1000 THEN
                retention := coalesce((SELECT (s.value #>> '{}')::bigint FROM rale.settings s WHERE s.key = 'results_retention_entries'), 1000000);
                DELETE FROM rale.results r WHERE r.index < (p_index[n] / 1000) * 1000 - retention;
            END IF;
            RETURN QUERY SELECT u.idx, 'ok'::text, u.res, NULL::text FROM unnest(p_index, f_res) AS u(idx, res);
            RETURN;
        END IF;
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

-------------------------------------------------------------------------------
-- rale.check_command, on every proposal's path: the same checks and errors as
-- 0004_hardening.sql, cheaper. The command is printed as text once (it was
-- printed twice), the depth check runs only on texts with enough brackets to
-- be that deep, and the size limit is read without a nested SECURITY DEFINER call.
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rale.check_command(command jsonb) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    op        text;
    size      integer;
    max_bytes integer;
    n         jsonb;
    exact     boolean;
    txt       text;
BEGIN
    IF command IS NULL OR jsonb_typeof(command) <> 'object' THEN
        RAISE EXCEPTION 'rale: a command must be a JSON object, got %', coalesce(jsonb_typeof(command), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Pass e.g. ''{"op":"set","key":"k","value":1}'' or ''{"op":"call","handler":"name","payload":{}}''.';
    END IF;
    max_bytes := coalesce((SELECT s.value::integer FROM rale.settings s WHERE s.key = 'max_command_bytes'), 65536);
    txt := command::text;
    size := octet_length(txt);
    IF size > max_bytes THEN
        RAISE EXCEPTION 'rale: the command is % bytes, above the limit of % bytes', size, max_bytes
            USING ERRCODE = '54000',
                  HINT = 'Store large data elsewhere and propose a reference, or raise the max_command_bytes setting.';
    END IF;
    -- Level 0 is the command itself; a value at level 101 sits inside 101 nested objects or arrays.
    -- (101 levels need 101 opening brackets: a text with fewer "[" and "{",
    -- counting those inside strings too, cannot be that deep.)
    IF length(txt) - length(translate(txt, '[{', '')) >= 101 AND jsonb_path_exists(command, 'strict $.**{101}') THEN
        RAISE EXCEPTION 'rale: the command is nested deeper than 100 levels of objects and arrays'
            USING ERRCODE = '22023', HINT = 'Flatten the value, or store it as a JSON string.';
    END IF;
    -- Only a number printed with 16 or more digits can be inexact as a 64-bit float: check those.
    IF txt ~ '[0-9]{16}' THEN
        FOR n IN SELECT v FROM jsonb_path_query(command, 'strict $.** ? (@.type() == "number")') AS v LOOP
            BEGIN
                exact := (n::text::float8)::text::numeric = n::text::numeric;
            EXCEPTION WHEN numeric_value_out_of_range THEN
                exact := false;
            END;
            IF NOT exact THEN
                RAISE EXCEPTION 'rale: the number % cannot be carried exactly (rale reads commands as 64-bit floating point numbers)', left(n::text, 40)
                    USING ERRCODE = '22023', HINT = 'Send large or very precise numbers as JSON strings.';
            END IF;
        END LOOP;
    END IF;
    op := command->>'op';
    IF op IS NULL THEN
        RAISE EXCEPTION 'rale: the command has no "op" field'
            USING ERRCODE = '22023', HINT = 'Use one of: set, delete, cas, call.';
    ELSIF op IN ('set', 'delete', 'cas') THEN
        IF jsonb_typeof(command->'key') IS DISTINCT FROM 'string' OR length(command->>'key') = 0 THEN
            RAISE EXCEPTION 'rale: "%" needs a non-empty string "key"', op USING ERRCODE = '22023';
        END IF;
        IF octet_length(command->>'key') > 1024 THEN
            RAISE EXCEPTION 'rale: the key is % bytes long, above the limit of 1024 bytes', octet_length(command->>'key')
                USING ERRCODE = '22023', HINT = 'Use a shorter key (e.g. a hash of the long one).';
        END IF;
        IF op IN ('set', 'cas') AND NOT command ? 'value' THEN
            RAISE EXCEPTION 'rale: "%" needs a "value"', op USING ERRCODE = '22023';
        END IF;
        IF op = 'cas' AND NOT command ? 'expected' THEN
            RAISE EXCEPTION 'rale: "cas" needs an "expected" value (null for "absent")' USING ERRCODE = '22023';
        END IF;
    ELSIF op = 'call' THEN
        IF jsonb_typeof(command->'handler') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'rale: "call" needs a string "handler"' USING ERRCODE = '22023';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM rale.handlers WHERE name = command->>'handler') THEN
            RAISE EXCEPTION 'rale: no handler is registered under the name "%"', left(command->>'handler', 100)
                USING ERRCODE = '42883',
                      HINT = 'List handlers with SELECT * FROM rale.handlers; an admin registers one with rale.register_handler(name, function).';
        END IF;
    ELSE
        RAISE EXCEPTION 'rale: unknown command op "%"', left(op, 100)
            USING ERRCODE = '22023', HINT = 'Use one of: set, delete, cas, call.';
    END IF;
END
$$;

REVOKE ALL ON FUNCTION rale.pump_take(integer, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.pump_let_go(integer, uuid[], bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.apply_kv_run(integer[], text[], text[], jsonb[], bigint[]) FROM PUBLIC;
