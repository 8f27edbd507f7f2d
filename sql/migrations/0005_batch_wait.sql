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
    -- Two statements, not one with `OR p_stale_after_ms IS NOT NULL AND ...`:
    -- the cached generic plan of such a condition scans the whole outbox,
    -- while the pending-only one uses proposals_pending.
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
-- 700 us of the server's time on each node. The function of 0003 keeps its
-- body under a new name, rale.apply_entries_general (its grants go with it);
-- rale.apply_entries tries the fast paths first and hands anything else to
-- it. The fast paths give the same outcomes and rows (test/pg/apply.test.ts
-- compares both with the per-statement reference).
-------------------------------------------------------------------------------

ALTER FUNCTION rale.apply_entries(bigint[], bigint[], text[], text[], text[], jsonb[], jsonb[], text[], boolean)
    RENAME TO apply_entries_general;

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
    plain     boolean;
    f_pos     integer[];
    f_res     jsonb[];
    res       jsonb;
    cnt       bigint;
    retention bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF NOT p_sync THEN
        -- Safe: the log is the durability point (pg DESIGN, as in the general path).
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

    -- Anything else: the general path (it takes the same lock again, a no-op in this transaction).
    RETURN QUERY SELECT * FROM rale.apply_entries_general(p_index, p_term, p_id, p_action, p_key, p_value, p_expected, p_error, p_sync);
END
$$;

REVOKE ALL ON FUNCTION rale.pump_take(integer, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.pump_let_go(integer, uuid[], bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.apply_kv_run(integer[], text[], text[], jsonb[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION rale.apply_entries(bigint[], bigint[], text[], text[], text[], jsonb[], jsonb[], text[], boolean) FROM PUBLIC;
