-- The audit hash inlined: audit_field() and audit_hash() lose their `SET search_path`.
--
-- A SQL function with a SET clause is never inlined into the statement that calls it: every
-- call of audit_hash() ran as a function call of its own, saving and restoring the setting,
-- and so did each of its ten audit_field() calls. That was most of the cost of an audited
-- write (a confirmation's statement ran at about half the rate it runs at inlined). Both are
-- plain expressions over built-in functions, called from audit_append(), which keeps its own
-- `SET search_path`, so names inside them resolve as before.
-- Expand only: same signatures and results; the previous binary is unaffected.

ALTER FUNCTION audit_field(BYTEA) RESET search_path;
ALTER FUNCTION audit_hash(TEXT, BIGINT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, TEXT, TEXT, BYTEA)
    RESET search_path;
