-- 0003: the fast path (owned by the throughput work). Intentionally empty for now.
SELECT 1;
