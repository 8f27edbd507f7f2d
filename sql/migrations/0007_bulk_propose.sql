-- 0007_bulk_propose: many commands per statement.
--
-- Why: at many SQL clients the leader's PostgreSQL spends most of its CPU on
-- the clients' own statements (a propose, its commit, the waits: about
-- 0.85 ms per proposal on a 2-core machine, README "Performance"), while
-- Raft and the apply already batch tens of entries per write. A client that
-- has many commands at hand sends them in one statement and pays that
-- per-statement cost once:
--
--   SELECT rale_propose_many(ARRAY['{"op":"set","key":"a","value":1}', ...]::jsonb[]);
--   SELECT * FROM rale_wait_many(ids, 5000);
--   CALL rale.submit_many(ARRAY[...]::jsonb[], NULL);   -- both, like rale.submit
--
-- Each command is still its own proposal and its own log entry, applied
-- exactly once, with its own outcome: one that fails does not undo the
-- others. They reach the log in array order (created_at increases by one
-- microsecond per element, and the pump takes in created_at order), except
-- that after a leader change the pump may resubmit some of them later than
-- others; a client that needs several changes to apply together proposes
-- one handler command instead.
--
-- Limits: at most rale.max_commands_per_call (1000) commands per call; each
-- one is checked like a single proposal (rale.check_command: an object, at
-- most max_command_bytes). A bad element refuses the whole call and names
-- its position; nothing of it is proposed.
-- Never edit this file once released: add a new numbered migration instead.

-- The limit, as a function so that clients and tests can read it.
CREATE FUNCTION rale.max_commands_per_call() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- The shape checks both bulk functions make on their array argument (one
-- dimension, at most max_commands_per_call elements), with one wording.
CREATE FUNCTION rale.check_many(fn text, noun text, dims integer, n integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, rale AS $$
BEGIN
    IF dims > 1 THEN
        RAISE EXCEPTION 'rale: % needs a one-dimensional array of %, got % dimensions', fn, noun, dims USING ERRCODE = '2202E';
    END IF;
    IF n > rale.max_commands_per_call() THEN
        RAISE EXCEPTION 'rale: % got % %, above the limit of % per call', fn, n, noun, rale.max_commands_per_call()
            USING ERRCODE = '54000', HINT = 'Split them into several calls.';
    END IF;
END
$$;

CREATE FUNCTION rale.propose_many(commands jsonb[]) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    n       integer;
    i       integer := 0;
    ids     uuid[];
    base    timestamptz := clock_timestamp();
    message text;
    hint    text;
    state   text;
BEGIN
    IF commands IS NULL THEN
        RAISE EXCEPTION 'rale: propose_many needs an array of commands, got NULL'
            USING ERRCODE = '22004', HINT = 'Pass e.g. ARRAY[''{"op":"set","key":"k","value":1}'']::jsonb[].';
    END IF;
    n := coalesce(cardinality(commands), 0);
    PERFORM rale.check_many('propose_many', 'commands', array_ndims(commands), n);
    IF n = 0 THEN
        RETURN '{}'::uuid[];
    END IF;
    -- One exception block around the whole loop (one subtransaction, not one
    -- per command): it only adds the failing position to check_command's error.
    BEGIN
        FOR pos IN 1 .. n LOOP
            i := pos;
            PERFORM rale.check_command(commands[array_lower(commands, 1) + pos - 1]);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
        RAISE EXCEPTION 'rale: command % of %: %', i, n, regexp_replace(message, '^rale: ', '')
            USING ERRCODE = state, HINT = coalesce(nullif(hint, ''), 'Fix or drop that command; nothing of this call was proposed.');
    END;
    ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n));
    INSERT INTO rale.proposals (id, command, created_at)
    SELECT u.id, u.command, base + make_interval(secs => (u.pos - 1) / 1000000.0)
    FROM unnest(ids, commands) WITH ORDINALITY AS u(id, command, pos);
    RETURN ids;
END
$$;

-- The outcomes of proposals, one row each, in the order given. The timeout
-- covers the whole call: once it has passed, the remaining ones are
-- reported as they are now (timed_out if not applied yet).
--
-- Set-based, not rale.wait once per id: the ids of one call usually sit in
-- one or two pump batches, so it waits (through rale.wait) for the first id
-- that has no result yet, which lets its whole batch through, then looks
-- for results of all of them again. Per id that is one results lookup, not
-- rale.wait's three.
--
-- The planner settings: plpgsql caches a generic plan per session, made
-- when the session first runs the statement, and a session that starts
-- while rale.results is small gets a plan that scans it (a hash or merge
-- join), which it keeps while the table grows to its retention of 10^6
-- rows (measured: 40 us per id instead of 1-2). Every lookup here is by
-- primary key, for a few ids: nested loops over index scans are right at
-- every size.
CREATE FUNCTION rale.wait_many(proposals uuid[], timeout_ms integer DEFAULT 5000)
RETURNS TABLE (proposal uuid, status text, index bigint, term bigint, result jsonb, error text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, rale SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    deadline  timestamptz;
    remaining integer;
    n         integer;
    waiting   uuid;
    -- Ids rale.wait answered for without a result row (unknown, refused, timed out): not waited for again.
    settled   uuid[] := '{}';
    out       rale.outcome;
    rec       record;
BEGIN
    IF proposals IS NULL THEN
        RAISE EXCEPTION 'rale: wait_many needs an array of proposal ids, got NULL' USING ERRCODE = '22004';
    END IF;
    IF timeout_ms IS NULL THEN
        RAISE EXCEPTION 'rale: wait_many needs a timeout_ms (milliseconds; 0 returns the outcomes as they are now)' USING ERRCODE = '22004';
    END IF;
    n := coalesce(cardinality(proposals), 0);
    PERFORM rale.check_many('wait_many', 'proposal ids', array_ndims(proposals), n);
    IF array_position(proposals, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'rale: wait_many: proposal id % of % is NULL', array_position(proposals, NULL), n USING ERRCODE = '22004';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM rale.proposals p
               WHERE p.id = ANY (proposals) AND p.xmin::text::bigint = txid_current_if_assigned() % 4294967296) THEN
        RAISE EXCEPTION 'rale: these proposals were made in this same transaction; they are only proposed when the transaction commits'
            USING ERRCODE = '25000',
                  HINT = 'COMMIT first and call rale_wait_many in a new transaction, or use CALL rale.submit_many(commands, NULL) to propose and wait in one statement.';
    END IF;
    deadline := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    LOOP
        SELECT u.id INTO waiting
        FROM unnest(proposals) WITH ORDINALITY AS u(id, pos)
        LEFT JOIN rale.results r ON r.proposal_id = u.id::text
        WHERE r.proposal_id IS NULL AND u.id <> ALL (settled)
        ORDER BY u.pos LIMIT 1;
        EXIT WHEN NOT FOUND;
        remaining := ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)::integer;
        EXIT WHEN remaining <= 0;
        out := rale.wait(waiting, remaining);
        IF out.status NOT IN ('applied', 'failed') OR out.index IS NULL THEN
            settled := settled || waiting;
        END IF;
    END LOOP;
    FOR rec IN
        SELECT u.id, r.status AS r_status, r.index AS r_index, r.term AS r_term, r.result AS r_result, r.error AS r_error
        FROM unnest(proposals) WITH ORDINALITY AS u(id, pos)
        LEFT JOIN rale.results r ON r.proposal_id = u.id::text
        ORDER BY u.pos
    LOOP
        proposal := rec.id;
        IF rec.r_status IS NOT NULL THEN
            status := rec.r_status;
            index := rec.r_index;
            term := rec.r_term;
            result := rec.r_result;
            error := rec.r_error;
        ELSE
            out := rale.outcome_of(rec.id);
            status := CASE WHEN out.status IN ('pending', 'committed') THEN 'timed_out' ELSE out.status END;
            index := out.index;
            term := out.term;
            result := out.result;
            error := out.error;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Propose and wait in one statement, like rale.submit: the proposals commit
-- (asynchronously: Raft makes them durable), then the call waits for all
-- of them. outcomes[i] is the outcome of commands[i].
CREATE PROCEDURE rale.submit_many(commands jsonb[], INOUT outcomes rale.outcome[] DEFAULT NULL, timeout_ms integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    IF timeout_ms IS NULL THEN
        RAISE EXCEPTION 'rale: submit_many needs a timeout_ms (milliseconds)' USING ERRCODE = '22004';
    END IF;
    ids := rale.propose_many(commands);
    PERFORM set_config('synchronous_commit', 'off', true);
    COMMIT;
    outcomes := ARRAY(
        SELECT ROW(w.status, w.index, w.term, w.result, w.error)::rale.outcome
        FROM rale.wait_many(ids, timeout_ms) WITH ORDINALITY AS w(proposal, status, index, term, result, error, pos)
        ORDER BY w.pos);
END
$$;

CREATE FUNCTION public.rale_propose_many(commands jsonb[]) RETURNS uuid[]
LANGUAGE sql VOLATILE AS $$ SELECT rale.propose_many(commands) $$;
CREATE FUNCTION public.rale_wait_many(proposals uuid[], timeout_ms integer DEFAULT 5000)
RETURNS TABLE (proposal uuid, status text, index bigint, term bigint, result jsonb, error text)
LANGUAGE sql VOLATILE AS $$ SELECT * FROM rale.wait_many(proposals, timeout_ms) $$;

REVOKE EXECUTE ON FUNCTION rale.check_many(text, text, integer, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rale.max_commands_per_call(), rale.propose_many(jsonb[]), rale.wait_many(uuid[], integer),
    public.rale_propose_many(jsonb[]), public.rale_wait_many(uuid[], integer) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE rale.submit_many(jsonb[], rale.outcome[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rale.max_commands_per_call(), rale.propose_many(jsonb[]), rale.wait_many(uuid[], integer),
    public.rale_propose_many(jsonb[]), public.rale_wait_many(uuid[], integer) TO rale_client;
GRANT EXECUTE ON PROCEDURE rale.submit_many(jsonb[], rale.outcome[], integer) TO rale_client;
