-- 0001_core: the Raft storage of one node (see sql/DESIGN.md).
--
-- Applied by sidecar/src/pg/migrate.ts inside one transaction, after it has
-- created the schema `rale` and the table rale.schema_version. Never edit
-- this file once released: add a new numbered migration instead (the runner
-- refuses to start when an applied migration's text has changed).
--
-- One database holds one node's state: these tables have no node column.

-- The Raft log after the latest snapshot.
-- Invariant (PgLogStorage.persist checks it before every write): the rows
-- hold exactly the indexes snapshot.index + 1 .. max(index), with no hole.
-- Terms never decrease with the index (a Raft property the core keeps).
-- `index` is the primary key, so truncating a suffix (index >= n) and
-- reading a range are both index range scans.
CREATE TABLE rale.log_entries (
    index  bigint   PRIMARY KEY CHECK (index > 0),
    term   bigint   NOT NULL CHECK (term > 0),
    -- EntryKind in sidecar/src/core/types.ts: 0 normal, 1 noop, 2 config.
    kind   smallint NOT NULL CHECK (kind >= 0),
    -- Opaque payload (the JSON of a ConfigChange for kind 2); empty for noop.
    data   bytea    NOT NULL,
    -- The node that created the entry as leader; null when unknown.
    leader text
);

COMMENT ON TABLE rale.log_entries IS
    'Raft log after the latest snapshot: contiguous indexes snapshot.index+1 .. max(index). Written only by the sidecar.';

-- Raft's durable per-node state (HardState). At most one row: the `id`
-- column can only be true. No row means the node has never persisted one
-- (term 0, no vote, commit 0).
CREATE TABLE rale.hard_state (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    term   bigint  NOT NULL CHECK (term >= 0),
    -- Node voted for in `term`, or null.
    vote   text,
    -- Highest index known committed (an optimisation for restarts, not needed for safety).
    commit bigint  NOT NULL CHECK (commit >= 0)
);

COMMENT ON TABLE rale.hard_state IS
    'Raft hard state of this node (current term, vote, commit index): a single row. Written only by the sidecar.';

-- The latest snapshot only: older ones are never needed (a follower that is
-- behind gets the latest). At most one row, like hard_state. No row means no
-- snapshot: the log starts at index 1.
CREATE TABLE rale.snapshot (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- Index and term of the last entry the snapshot covers.
    index  bigint  NOT NULL CHECK (index >= 0),
    term   bigint  NOT NULL CHECK (term >= 0),
    -- ClusterConfig in force at `index`: {"voters": [...], "learners": [...]}.
    config jsonb   NOT NULL,
    -- Application state, opaque to Raft (what the state machine's snapshot() returned).
    data   bytea   NOT NULL
);

COMMENT ON TABLE rale.snapshot IS
    'Latest Raft snapshot of this node (its metadata and state bytes): a single row. Written only by the sidecar.';
