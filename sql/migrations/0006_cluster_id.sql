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

-- For DBAs, in the one case where no node has an id: a cluster upgraded
-- from a version before cluster ids after every node's log was compacted
-- past its first entry. Set one (any 16 hex digits) on ONE node, restart
-- that node's sidecar and make it the leader (rale transfer-leader): its
-- calls then carry the id to every member, and each, having none, adopts
-- it. Refuses to change an id a node already has.
CREATE FUNCTION rale.set_cluster_id(new_id text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, rale AS $$
DECLARE
    existing text;
BEGIN
    IF new_id IS NULL OR new_id !~ '^[0-9a-f]{16}$' THEN
        RAISE EXCEPTION 'rale: a cluster id is 16 lowercase hex digits, got %', coalesce(quote_literal(left(new_id, 40)), 'NULL')
            USING ERRCODE = '22023', HINT = 'For a new one: SELECT rale.set_cluster_id(left(md5(gen_random_uuid()::text), 16));';
    END IF;
    SELECT cluster_id INTO existing FROM rale.cluster_identity FOR UPDATE;
    IF existing IS NOT NULL AND existing <> new_id THEN
        RAISE EXCEPTION 'rale: this node already belongs to cluster %; a cluster id never changes', existing
            USING ERRCODE = '55000',
                  HINT = 'Set an id only where rale.cluster_id() is NULL on every node (see docs/operations.md, "Cluster identity").';
    END IF;
    INSERT INTO rale.cluster_identity (id, cluster_id) VALUES (true, new_id) ON CONFLICT (id) DO NOTHING;
    RETURN new_id;
END
$$;
REVOKE EXECUTE ON FUNCTION rale.set_cluster_id(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rale.set_cluster_id(text) TO rale_admin;
