-- 0004: hardening against hostile input. Intentionally empty for now.
SELECT 1;
