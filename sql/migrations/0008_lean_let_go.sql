-- 0008_lean_let_go: the pump's let-go records log positions only where
-- they still tell something.
--
-- rale.pump_let_go (0005) wrote index and term into every row of the batch.
-- A batch is let go once its highest index is applied here, so nearly every
-- row already has its result in rale.results, which rale.outcome_of and
-- rale.wait read first; the position then served no one, and the row is
-- deleted within a second. Each such UPDATE was a row write (a new tuple, a
-- WAL record, index entries) per proposal on the node's busiest path. Only
-- rows without a result (a holder that stopped waiting before its batch was
-- applied, when outcome_of reports 'committed' from the position) are
-- written now.
--
-- The planner settings: the pump's connections live long and keep their
-- plans; one first planned while rale.results was small would keep a plan
-- that scans it (see wait_many, 0007). Lookups by primary key are right at
-- every size.
-- Never edit this file once released: add a new numbered migration instead.

CREATE OR REPLACE FUNCTION rale.pump_let_go(p_batch integer, p_ids uuid[], p_index bigint[], p_term bigint[]) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    PERFORM pg_advisory_unlock(1918987362, p_batch);
    IF coalesce(cardinality(p_ids), 0) > 0 THEN
        UPDATE rale.proposals p SET index = u.index, term = u.term
        FROM unnest(p_ids, p_index, p_term) AS u(id, index, term)
        WHERE p.id = u.id AND p.batch = p_batch
          AND NOT EXISTS (SELECT 1 FROM rale.results r WHERE r.proposal_id = u.id::text);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION rale.pump_let_go(integer, uuid[], bigint[], bigint[]) FROM PUBLIC;
