-- 0004_hardening: bad input, found by the property-based tests in test/hostile/.
--
-- Every function replaced here keeps its signature (so its grants stay) and
-- refuses at call time, with a clear SQLSTATE error, input that used to be
-- accepted and then went wrong later:
--  * rale.check_command (hence rale.propose, CALL rale.submit, and the REST
--    API's propose):
--      - commands nested deeper than 100 levels: accepted, then the sidecar
--        could not re-encode them (JSON.stringify overflows its stack), so
--        the proposal pump failed on that row on every round and no later
--        proposal of the node was ever submitted;
--      - kv keys above 1024 bytes: accepted and committed, then applying the
--        entry failed on every node (a btree index row holds at most 2704
--        bytes), so the whole cluster stopped applying for good;
--      - numbers that a 64-bit float cannot hold exactly (1e400, 1e-400,
--        12345678901234567891): the sidecar reads commands as JavaScript,
--        so they were silently applied as null, 0 or a rounded number.
--  * rale.change_membership: a change without "type" passed the check (a
--    NULL in the condition) and was only refused later, asynchronously; node
--    ids and addresses of any shape and size were accepted (a 4 KB node id
--    cannot be published in rale.members). Now: the REST API's rules.
--  * rale.wait: a waiter whose row was still pending (not yet taken by the
--    pump, all of whose batches were in flight) polled it, about 30 row-lock
--    probes and pg_sleep calls per proposal at 64 clients, which saturated
--    the leader's PostgreSQL. It now blocks on the pump's pick gate (an
--    advisory lock, see sidecar/src/pg/pump.ts) instead.
--  * rale.read_barrier / rale.wait: a NULL timeout_ms gave "read barrier not
--    confirmed within <NULL> ms" or waited without bound; a negative one made
--    the barrier fail as if the cluster were down. Now a clear error.
-- Never edit this file once released: add a new numbered migration instead.

CREATE OR REPLACE FUNCTION rale.check_command(command jsonb) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    op        text;
    size      integer;
    max_bytes integer := coalesce((rale.setting('max_command_bytes'))::integer, 65536);
    n         jsonb;
    exact     boolean;
BEGIN
    IF command IS NULL OR jsonb_typeof(command) <> 'object' THEN
        RAISE EXCEPTION 'rale: a command must be a JSON object, got %', coalesce(jsonb_typeof(command), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Pass e.g. ''{"op":"set","key":"k","value":1}'' or ''{"op":"call","handler":"name","payload":{}}''.';
    END IF;
    size := octet_length(command::text);
    IF size > max_bytes THEN
        RAISE EXCEPTION 'rale: the command is % bytes, above the limit of % bytes', size, max_bytes
            USING ERRCODE = '54000',
                  HINT = 'Store large data elsewhere and propose a reference, or raise the max_command_bytes setting.';
    END IF;
    -- Level 0 is the command itself; a value at level 101 sits inside 101 nested objects or arrays.
    IF jsonb_path_exists(command, 'strict $.**{101}') THEN
        RAISE EXCEPTION 'rale: the command is nested deeper than 100 levels of objects and arrays'
            USING ERRCODE = '22023', HINT = 'Flatten the value, or store it as a JSON string.';
    END IF;
    -- Only a number printed with 16 or more digits can be inexact as a 64-bit float: check those.
    IF command::text ~ '[0-9]{16}' THEN
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

CREATE OR REPLACE FUNCTION rale.change_membership(change jsonb) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    new_id uuid;
    extra  text;
    usage  constant text := 'Use {"type":"addLearner"|"promote"|"addVoter"|"remove","node":"<id>","context":"<address>"}.';
BEGIN
    IF change IS NULL OR jsonb_typeof(change) <> 'object' THEN
        RAISE EXCEPTION 'rale: not a membership change: it must be a JSON object, got %', coalesce(jsonb_typeof(change), 'NULL')
            USING ERRCODE = '22023', HINT = usage;
    END IF;
    SELECT k INTO extra FROM jsonb_object_keys(change) AS k WHERE k NOT IN ('type', 'node', 'context') LIMIT 1;
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'rale: not a membership change: it has no field "%"', left(extra, 100) USING ERRCODE = '22023', HINT = usage;
    END IF;
    IF jsonb_typeof(change->'type') IS DISTINCT FROM 'string' OR change->>'type' NOT IN ('addLearner', 'promote', 'addVoter', 'remove') THEN
        RAISE EXCEPTION 'rale: not a membership change: unknown type %', coalesce(left((change->'type')::text, 100), '(none)')
            USING ERRCODE = '22023', HINT = usage;
    END IF;
    IF jsonb_typeof(change->'node') IS DISTINCT FROM 'string' OR change->>'node' !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'rale: not a membership change: "node" must be a node id of 1-128 letters, digits, "_", ".", ":" or "-", starting with a letter or digit; got %',
                coalesce(left((change->'node')::text, 140), '(none)')
            USING ERRCODE = '22023', HINT = usage;
    END IF;
    IF change ? 'context' AND jsonb_typeof(change->'context') <> 'null'
       AND (jsonb_typeof(change->'context') <> 'string' OR change->>'context' !~ '^[^[:space:][:cntrl:]]{1,255}$') THEN
        RAISE EXCEPTION 'rale: not a membership change: "context" (the node''s address) must be 1-255 characters without spaces, e.g. "10.0.0.4:7000"; got %',
                left((change->'context')::text, 100)
            USING ERRCODE = '22023', HINT = usage;
    END IF;
    INSERT INTO rale.proposals (command, kind) VALUES (change, 'membership') RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION rale.wait(proposal uuid, timeout_ms integer DEFAULT 5000) RETURNS rale.outcome
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    deadline    timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    pause       double precision := 0.001;
    remaining   double precision;
    row_held    boolean;
    gate_open   boolean;
    out         rale.outcome;
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
        out := rale.outcome_of(proposal);
        IF out.status IN ('applied', 'failed', 'unknown') THEN
            RETURN out;
        END IF;
        remaining := extract(epoch FROM deadline - clock_timestamp()) * 1000;
        IF remaining <= 0 THEN
            out.status := 'timed_out';
            RETURN out;
        END IF;
        -- The pump holds a batch's rows FOR UPDATE from when it takes them
        -- until they are applied here: waiting for that lock is waiting for
        -- the outcome. Whether the row is held is asked first (NOWAIT), so
        -- that a slow probe on a busy machine is never taken for a wait.
        -- Locks are taken in subtransactions rolled back at once: never kept.
        row_held := false;
        BEGIN
            PERFORM 1 FROM rale.proposals WHERE id = proposal FOR SHARE NOWAIT;
            RAISE SQLSTATE 'RL000';
        EXCEPTION
            WHEN SQLSTATE 'RL000' THEN NULL;
            WHEN lock_not_available THEN row_held := true;
        END;
        IF row_held THEN
            BEGIN
                PERFORM set_config('lock_timeout', greatest(ceil(remaining), 1)::integer || 'ms', true);
                PERFORM 1 FROM rale.proposals WHERE id = proposal FOR SHARE;
                RAISE SQLSTATE 'RL000';
            EXCEPTION
                WHEN SQLSTATE 'RL000' OR lock_not_available THEN NULL;
            END;
        ELSE
            -- Not held: the row is not in a pump batch (pending, or given
            -- up and waiting for resubmission). While all the pump's batches
            -- are in flight it holds the pick gate (advisory lock "rale", 3)
            -- and lets waiters through when it takes the next batch: wait for
            -- it (shared, in a subtransaction rolled back at once, so it is
            -- never kept), then look again. Open gate (the pump can take rows
            -- now, or the sidecar is down): pause, backing off to 5 ms.
            remaining := extract(epoch FROM deadline - clock_timestamp()) * 1000;
            CONTINUE WHEN remaining <= 0;
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

CREATE OR REPLACE FUNCTION rale.read_barrier(timeout_ms integer DEFAULT 5000) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    deadline timestamptz;
    my_ticket bigint;
    target   bigint;
    pause    double precision := 0.0002;
BEGIN
    IF timeout_ms IS NULL THEN
        RAISE EXCEPTION 'rale: read_barrier needs a timeout_ms (milliseconds)' USING ERRCODE = '22004';
    END IF;
    IF timeout_ms < 0 THEN
        RAISE EXCEPTION 'rale: timeout_ms must be >= 0, got %', timeout_ms USING ERRCODE = '22023';
    END IF;
    deadline := clock_timestamp() + make_interval(secs => timeout_ms / 1000.0);
    my_ticket := nextval('rale.read_tickets');
    LOOP
        SELECT read_index INTO target FROM rale.read_rounds WHERE ticket >= my_ticket;
        EXIT WHEN FOUND;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'rale: read barrier not confirmed within % ms', timeout_ms
                USING ERRCODE = '57014', HINT = 'Is the sidecar running, and can it reach a quorum? See SELECT * FROM rale.status().';
        END IF;
        PERFORM pg_sleep(pause);
        pause := least(pause * 2, 0.005);
    END LOOP;
    pause := 0.0002;
    WHILE (SELECT index FROM rale.applied) < target LOOP
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'rale: this node has not applied up to read index % within % ms', target, timeout_ms
                USING ERRCODE = '57014', HINT = 'This node is behind; retry, or read from the leader.';
        END IF;
        PERFORM pg_sleep(pause);
        pause := least(pause * 2, 0.005);
    END LOOP;
    RETURN target;
END
$$;
