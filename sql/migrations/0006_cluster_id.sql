-- 0006_cluster_id: the cluster's identity, stored beside the log.
--
-- A fingerprint of how the cluster was founded (its founding voters and
-- cluster.token: sidecar/src/node/cluster-id.ts). Founders write it when
-- they bootstrap; a node that joins stores the id of the first peer that
-- calls it. Every peer call carries it, and a node refuses calls that carry
-- another one: founders given different bootstrap lists, or a node wired to
-- another cluster, are refused with an error that names both ids, instead of
-- mixing two logs whose entries share indexes and terms.
--
-- It belongs to this node's log, not to the replicated state: snapshots do
-- not carry it. Databases of earlier versions get it at the next start, from
-- the log's first entry while the log still holds it, or else from the first
-- peer that calls.
-- Never edit this file once released: add a new numbered migration instead.

CREATE TABLE rale.cluster_identity (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    cluster_id  text NOT NULL CHECK (cluster_id ~ '^[0-9a-f]{16}$'),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMENT ON TABLE rale.cluster_identity IS
    'This node''s cluster id (one row): peers that present another one are refused. Written by the sidecar; see docs/operations.md, "Cluster identity".';

-- For DBAs: SELECT rale.cluster_id(); NULL until the node has one.
CREATE FUNCTION rale.cluster_id() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
    SELECT cluster_id FROM rale.cluster_identity
$$;
REVOKE EXECUTE ON FUNCTION rale.cluster_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rale.cluster_id() TO rale_client;
