-- 0002_state: the replicated state, the proposal outbox, and the SQL client API.
--
-- Two kinds of table live here (see sql/DESIGN.md):
--  * REPLICATED: written only by the sidecar's apply transactions, identical
--    on every node at the same applied index: kv, handlers, settings,
--    results, applied.
--  * LOCAL: this node's own bookkeeping: proposals (the outbox SQL clients
--    write to), pump, node_status, members (published by the sidecar from
--    its Raft configuration), read_rounds.
-- Never edit this file once released: add a new numbered migration instead.

-------------------------------------------------------------------------------
-- Replicated state
-------------------------------------------------------------------------------

-- The built-in key-value state. `version` is the log index of the last write:
-- identical on every node, unlike a timestamp would be.
CREATE TABLE rale.kv (
    key     text  PRIMARY KEY,
    value   jsonb NOT NULL,
    version bigint NOT NULL
);

-- Handlers: SQL functions a DBA registered under a name. A proposal names a
-- handler; it never carries SQL. `function` is a regprocedure taking one jsonb
-- (checked when registered); `tables` lists the tables the handler writes,
-- which snapshots carry along with kv.
CREATE TABLE rale.handlers (
    name             text   PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$'),
    function         text   NOT NULL,
    tables           text[] NOT NULL DEFAULT '{}',
    registered_index bigint NOT NULL
);

-- Cluster membership: the Raft configuration in force on this node (it takes
-- effect when its entry is appended, before it commits), published by the
-- sidecar whenever it changes; the log's config entries and the snapshot's
-- metadata are the durable record. `protocol` names how the member speaks:
-- 'rale', or a bridge name for a foreign node.
CREATE TABLE rale.members (
    node_id    text        PRIMARY KEY,
    role       text        NOT NULL CHECK (role IN ('voter', 'learner')),
    address    text,
    protocol   text        NOT NULL DEFAULT 'rale',
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Replicated settings (limits and the like), changed through the log.
CREATE TABLE rale.settings (
    key   text  PRIMARY KEY,
    value jsonb NOT NULL
);
INSERT INTO rale.settings (key, value) VALUES
    ('max_command_bytes', '65536'),
    ('results_retention_entries', '1000000');

-- The outcome of every applied proposal, by proposal id: the exactly-once
-- record. An entry whose id is already here is not applied again.
CREATE TABLE rale.results (
    -- A proposal's id: the outbox uuid for SQL proposals, any unique text for others.
    proposal_id text   PRIMARY KEY,
    index       bigint NOT NULL,
    term        bigint NOT NULL,
    status      text   NOT NULL CHECK (status IN ('applied', 'failed')),
    result      jsonb,
    error       text
);
CREATE INDEX results_index ON rale.results (index);

-- The applied index: advanced in the same transaction as the effects of the
-- entries it covers. One row.
CREATE TABLE rale.applied (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    index bigint  NOT NULL,
    term  bigint  NOT NULL
);
INSERT INTO rale.applied (index, term) VALUES (0, 0);

-------------------------------------------------------------------------------
-- Local state
-------------------------------------------------------------------------------

-- The outbox: rale_propose() inserts here inside the caller's transaction, so
-- a rolled-back transaction proposes nothing. The sidecar picks rows up,
-- proposes them to Raft, and deletes them once their result is applied here.
CREATE TABLE rale.proposals (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    command      jsonb       NOT NULL,
    kind         text        NOT NULL DEFAULT 'command' CHECK (kind IN ('command', 'membership')),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- pending: not yet handed to Raft; submitted: handed to Raft (resubmitted
    -- if no result appears in time: the results table makes that safe);
    -- rejected: Raft refused it before it reached the log (see error).
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'submitted', 'rejected')),
    error        text,
    submitted_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    -- Log position of the latest submission (for status 'committed').
    index        bigint,
    term         bigint
);
CREATE INDEX proposals_pending ON rale.proposals (created_at) WHERE state = 'pending';

-- Whether the sidecar's proposal pump is idle and waiting for a wake-up. It
-- is unlogged (no WAL, no fsync): losing it in a crash is harmless, the pump
-- rewrites it on start. Proposers send a NOTIFY only while it is true, so a
-- busy node pays for no NOTIFY at all (NOTIFY serialises commits).
CREATE UNLOGGED TABLE rale.pump (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    sleeping boolean NOT NULL
);
INSERT INTO rale.pump (sleeping) VALUES (true);

-- What the sidecar last published about its node (role, term, leader...).
CREATE UNLOGGED TABLE rale.node_status (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    node_id       text        NOT NULL,
    role          text        NOT NULL,
    term          bigint      NOT NULL,
    leader        text,
    leader_address text,
    commit_index  bigint      NOT NULL,
    applied_index bigint      NOT NULL,
    last_index    bigint      NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- Read barriers: a waiter takes a ticket from the sequence (non-transactional,
-- so the sidecar sees it at once, without a commit); the sidecar runs a
-- ReadIndex round for all tickets up to `ticket` and publishes the read index.
CREATE SEQUENCE rale.read_tickets;
CREATE UNLOGGED TABLE rale.read_rounds (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    ticket     bigint NOT NULL,
    read_index bigint NOT NULL
);
INSERT INTO rale.read_rounds (ticket, read_index) VALUES (0, 0);

-------------------------------------------------------------------------------
-- Roles: nothing for PUBLIC; rale_client proposes and reads; rale_admin also
-- registers handlers and changes membership.
-------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rale_client') THEN
        CREATE ROLE rale_client NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rale_admin') THEN
        CREATE ROLE rale_admin NOLOGIN;
    END IF;
END
$$;
GRANT rale_client TO rale_admin;

REVOKE ALL ON SCHEMA rale FROM PUBLIC;
GRANT USAGE ON SCHEMA rale TO rale_client;
ALTER DEFAULT PRIVILEGES IN SCHEMA rale REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
GRANT SELECT ON rale.kv, rale.members, rale.results, rale.handlers, rale.settings TO rale_client;

-------------------------------------------------------------------------------
-- Wake-up of the proposal pump: one NOTIFY per statement, and only while the
-- pump sleeps.
-------------------------------------------------------------------------------

CREATE FUNCTION rale.wake_pump() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rale.pump WHERE sleeping) THEN
        PERFORM pg_notify('rale_proposals', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER proposals_wake AFTER INSERT ON rale.proposals
    FOR EACH STATEMENT EXECUTE FUNCTION rale.wake_pump();

-------------------------------------------------------------------------------
-- The SQL client API. Every function is SECURITY DEFINER with a fixed
-- search_path: clients need EXECUTE, not table privileges.
-------------------------------------------------------------------------------

CREATE FUNCTION rale.setting(name text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
    SELECT value FROM rale.settings WHERE key = name
$$;

-- Checks a client command and raises a clear error when it is not valid.
CREATE FUNCTION rale.check_command(command jsonb) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    op        text;
    size      integer;
    max_bytes integer := coalesce((rale.setting('max_command_bytes'))::integer, 65536);
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
    op := command->>'op';
    IF op IS NULL THEN
        RAISE EXCEPTION 'rale: the command has no "op" field'
            USING ERRCODE = '22023', HINT = 'Use one of: set, delete, cas, call.';
    ELSIF op IN ('set', 'delete', 'cas') THEN
        IF jsonb_typeof(command->'key') IS DISTINCT FROM 'string' OR length(command->>'key') = 0 THEN
            RAISE EXCEPTION 'rale: "%" needs a non-empty string "key"', op USING ERRCODE = '22023';
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
            RAISE EXCEPTION 'rale: no handler is registered under the name "%"', command->>'handler'
                USING ERRCODE = '42883',
                      HINT = 'List handlers with SELECT * FROM rale.handlers; an admin registers one with rale.register_handler(name, function).';
        END IF;
    ELSE
        RAISE EXCEPTION 'rale: unknown command op "%"', op
            USING ERRCODE = '22023', HINT = 'Use one of: set, delete, cas, call.';
    END IF;
END
$$;

-- Queues a proposal in the caller's transaction and returns its id. Nothing
-- is proposed if that transaction rolls back.
CREATE FUNCTION rale.propose(command jsonb) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM rale.check_command(command);
    INSERT INTO rale.proposals (command) VALUES (command) RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- The outcome of a proposal as this node sees it now.
--   pending:   queued or submitted, not yet committed as far as this node knows
--   committed: in the log and committed, not yet applied here
--   applied:   applied here; result holds the handler's or kv command's result
--   failed:    applied here and the handler raised, or refused before it
--              reached the log: error holds the message
--   unknown:   no such proposal on this node
CREATE TYPE rale.outcome AS (
    status text,
    index  bigint,
    term   bigint,
    result jsonb,
    error  text
);

CREATE FUNCTION rale.outcome_of(proposal uuid) RETURNS rale.outcome
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    r   rale.results%ROWTYPE;
    p   rale.proposals%ROWTYPE;
    out rale.outcome;
BEGIN
    SELECT * INTO r FROM rale.results WHERE proposal_id = proposal::text;
    IF FOUND THEN
        out := (r.status, r.index, r.term, r.result, r.error);
        RETURN out;
    END IF;
    SELECT * INTO p FROM rale.proposals WHERE id = proposal;
    IF NOT FOUND THEN
        out := ('unknown', NULL, NULL, NULL, NULL);
        RETURN out;
    END IF;
    IF p.state = 'rejected' THEN
        out := ('failed', NULL, NULL, NULL, p.error);
    ELSIF p.index IS NOT NULL AND EXISTS (SELECT 1 FROM rale.node_status WHERE commit_index >= p.index) THEN
        out := ('committed', p.index, p.term, NULL, NULL);
    ELSE
        out := ('pending', p.index, p.term, NULL, NULL);
    END IF;
    RETURN out;
END
$$;

-- Waits up to timeout_ms for a proposal to be applied (or fail) on THIS node
-- and returns its outcome; status 'timed_out' when the time ran out (the
-- proposal may still apply later: wait again, it is never applied twice).
-- Call it after the transaction that proposed has committed: a proposal is
-- invisible to the sidecar until then.
CREATE FUNCTION rale.wait(proposal uuid, timeout_ms integer DEFAULT 5000) RETURNS rale.outcome
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    deadline    timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    pause       double precision := 0.001;
    remaining   double precision;
    waited_from timestamptz;
    out         rale.outcome;
BEGIN
    IF proposal IS NULL THEN
        RAISE EXCEPTION 'rale: wait needs a proposal id' USING ERRCODE = '22004';
    END IF;
    -- A proposal made in this very transaction cannot be seen by the sidecar
    -- before it commits: waiting would only time out.
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
        -- The pump holds a FOR UPDATE lock on the proposal's row from the
        -- moment it hands the proposal to Raft until the entry is applied on
        -- this node. Waiting for that lock is waiting for the outcome, with
        -- no polling. The lock is taken in a subtransaction that is rolled
        -- back at once, so this waiter never holds it (the pump skips locked rows).
        waited_from := clock_timestamp();
        BEGIN
            PERFORM set_config('lock_timeout', greatest(ceil(remaining), 1)::integer || 'ms', true);
            PERFORM 1 FROM rale.proposals WHERE id = proposal FOR SHARE;
            RAISE SQLSTATE 'RL000';
        EXCEPTION
            WHEN SQLSTATE 'RL000' OR lock_not_available THEN NULL;
        END;
        IF clock_timestamp() - waited_from < interval '200 microseconds' THEN
            -- Not blocked: the pump has not taken the proposal yet (or gave up
            -- waiting and will resubmit it). Pause, backing off to 5 ms.
            PERFORM pg_sleep(pause);
            pause := least(pause * 2, 0.005);
        END IF;
    END LOOP;
END
$$;

-- Propose and wait in one statement, for autocommit clients:
--   CALL rale.submit('{"op":"set","key":"a","value":1}', NULL);
-- A procedure may commit: it commits the proposal, then waits. It cannot run
-- inside an explicit transaction block (use rale.propose + COMMIT + rale.wait).
CREATE PROCEDURE rale.submit(command jsonb, INOUT outcome rale.outcome DEFAULT NULL, timeout_ms integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid;
BEGIN
    new_id := rale.propose(command);
    COMMIT;
    outcome := rale.wait(new_id, timeout_ms);
END
$$;

-- This node's view of the cluster, as the sidecar last published it.
CREATE FUNCTION rale.status() RETURNS TABLE (
    node_id text, role text, term bigint, leader text, leader_address text,
    commit_index bigint, applied_index bigint, last_index bigint, updated_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
    SELECT s.node_id, s.role, s.term, s.leader, s.leader_address, s.commit_index,
           (SELECT index FROM rale.applied), s.last_index, s.updated_at
    FROM rale.node_status s
$$;

-- Local read of one key (null when absent). Linearizable when preceded by
-- rale.read_barrier() in the same session.
CREATE FUNCTION rale.get(k text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
    SELECT value FROM rale.kv WHERE key = k
$$;

-- Waits until a read of this node's state is linearizable: the sidecar
-- confirms leadership with a quorum (ReadIndex) AFTER this call began, and
-- this node has applied up to that read index. Returns the read index.
CREATE FUNCTION rale.read_barrier(timeout_ms integer DEFAULT 5000) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    my_ticket bigint := nextval('rale.read_tickets');
    target   bigint;
    pause    double precision := 0.0002;
BEGIN
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

-- Linearizable read of one key: a read barrier, then the local read.
CREATE FUNCTION rale.get_linearizable(k text, timeout_ms integer DEFAULT 5000) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
BEGIN
    PERFORM rale.read_barrier(timeout_ms);
    RETURN (SELECT value FROM rale.kv WHERE key = k);
END
$$;

-- Decodes bytes as JSON when they hold JSON (entries proposed through
-- bridges may carry any bytes), else returns them as a base64 JSON string.
CREATE FUNCTION rale.bytes_as_json(data bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN convert_from(data, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
    RETURN to_jsonb(encode(data, 'base64'));
END
$$;

-- The log as this node holds it (after its latest snapshot).
CREATE FUNCTION rale.log(from_index bigint DEFAULT 1, max_rows integer DEFAULT 100)
RETURNS TABLE (index bigint, term bigint, kind text, leader text, payload jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
    SELECT e.index, e.term,
           CASE e.kind WHEN 0 THEN 'normal' WHEN 1 THEN 'noop' WHEN 2 THEN 'config' ELSE e.kind::text END,
           e.leader,
           CASE WHEN e.kind IN (0, 2) THEN rale.bytes_as_json(e.data) END
    FROM rale.log_entries e
    WHERE e.index >= from_index
    ORDER BY e.index
    LIMIT least(greatest(max_rows, 0), 10000)
$$;

-------------------------------------------------------------------------------
-- Admin API: handlers and membership go through the log like everything else.
-------------------------------------------------------------------------------

-- Registers `fn` (a function taking one jsonb) under `handler_name`, on every
-- node, through the log. The function must exist on every node's database
-- (create it everywhere first): a node that lacks it records the entry as
-- failed, while the others apply it.
CREATE FUNCTION rale.register_handler(handler_name text, fn regproc, tables regclass[] DEFAULT '{}') RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    signature regprocedure;
    new_id    uuid;
BEGIN
    IF handler_name IS NULL OR handler_name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'rale: handler name % is not valid', coalesce(quote_literal(handler_name), 'NULL')
            USING ERRCODE = '22023', HINT = 'Use letters, digits, _ . - (at most 63), starting with a letter or _.';
    END IF;
    -- fn and tables were resolved with the CALLER's search_path (argument
    -- casts happen before the call); printed here, with only pg_catalog and
    -- rale on the path, they come out schema-qualified.
    signature := to_regprocedure(fn::text || '(jsonb)');
    IF signature IS NULL THEN
        RAISE EXCEPTION 'rale: function % has no variant taking one jsonb argument', fn
            USING ERRCODE = '42883', HINT = 'Create it as CREATE FUNCTION ... (payload jsonb) RETURNS jsonb.';
    END IF;
    INSERT INTO rale.proposals (command, kind)
    VALUES (jsonb_build_object('op', 'register_handler', 'name', handler_name, 'function', signature::text,
                               'tables', (SELECT coalesce(jsonb_agg(t::text), '[]') FROM unnest(coalesce(tables, '{}')) AS t)), 'command')
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Queues a membership change: {"type": "addLearner"|"promote"|"addVoter"|"remove", "node": id, "context": address}.
CREATE FUNCTION rale.change_membership(change jsonb) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    new_id uuid;
BEGIN
    IF change IS NULL OR jsonb_typeof(change) <> 'object'
       OR NOT (change->>'type' IN ('addLearner', 'promote', 'addVoter', 'remove'))
       OR jsonb_typeof(change->'node') IS DISTINCT FROM 'string' OR length(change->>'node') = 0 THEN
        RAISE EXCEPTION 'rale: not a membership change: %', change
            USING ERRCODE = '22023',
                  HINT = 'Use {"type":"addLearner"|"promote"|"addVoter"|"remove","node":"<id>","context":"<address>"}.';
    END IF;
    INSERT INTO rale.proposals (command, kind) VALUES (change, 'membership') RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-------------------------------------------------------------------------------
-- Names as the docs use them: SELECT rale_propose(...), rale_wait(...), ...
-------------------------------------------------------------------------------

CREATE FUNCTION public.rale_propose(command jsonb) RETURNS uuid
LANGUAGE sql VOLATILE AS $$ SELECT rale.propose(command) $$;
CREATE FUNCTION public.rale_wait(proposal uuid, timeout_ms integer DEFAULT 5000) RETURNS rale.outcome
LANGUAGE sql VOLATILE AS $$ SELECT rale.wait(proposal, timeout_ms) $$;
CREATE FUNCTION public.rale_status() RETURNS TABLE (
    node_id text, role text, term bigint, leader text, leader_address text,
    commit_index bigint, applied_index bigint, last_index bigint, updated_at timestamptz
) LANGUAGE sql STABLE AS $$ SELECT * FROM rale.status() $$;
CREATE FUNCTION public.rale_read_barrier(timeout_ms integer DEFAULT 5000) RETURNS bigint
LANGUAGE sql VOLATILE AS $$ SELECT rale.read_barrier(timeout_ms) $$;
CREATE FUNCTION public.rale_get(k text) RETURNS jsonb
LANGUAGE sql STABLE AS $$ SELECT rale.get(k) $$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rale FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE rale.submit(jsonb, rale.outcome, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.rale_propose(jsonb), public.rale_wait(uuid, integer), public.rale_status(),
    public.rale_read_barrier(integer), public.rale_get(text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION rale.propose(jsonb), rale.wait(uuid, integer), rale.outcome_of(uuid), rale.status(),
    rale.get(text), rale.get_linearizable(text, integer), rale.read_barrier(integer), rale.log(bigint, integer),
    rale.check_command(jsonb), rale.setting(text),
    public.rale_propose(jsonb), public.rale_wait(uuid, integer), public.rale_status(),
    public.rale_read_barrier(integer), public.rale_get(text) TO rale_client;
GRANT EXECUTE ON PROCEDURE rale.submit(jsonb, rale.outcome, integer) TO rale_client;
GRANT EXECUTE ON FUNCTION rale.register_handler(text, regproc, regclass[]), rale.change_membership(jsonb) TO rale_admin;
