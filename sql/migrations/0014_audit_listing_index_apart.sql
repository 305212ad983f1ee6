-- The index that lists an instance's audit rows in appending order can no longer be mistaken
-- for the one that finds a row of a chain.
--
-- audit_log had two indexes beginning with instance_id: the primary key (instance_id, chain,
-- seq) and audit_log_by_serial (instance_id, serial). On a young database both cost the same
-- to the planner, and the plan PL/pgSQL cached for the chain-head check of audit_head_forward()
-- (which looks a row up by instance, chain and seq) sometimes took audit_log_by_serial: every
-- audited write then read all of the instance's audit rows, and verifications slowed down to a
-- few hundred per second as the log grew.
--
-- audit_log_by_serial is now on (instance_id COLLATE "C", serial): only a condition on
-- instance_id in the "C" collation can use it, which the listing (`taler-otp audit list`,
-- GET …/private/audit) states and nothing else does. Instance ids are ASCII, so the collation
-- changes no result.
-- Expand only: the previous binary's listing still works (through the primary key and a sort).

DROP INDEX audit_log_by_serial;
CREATE UNIQUE INDEX audit_log_by_serial ON audit_log ((instance_id COLLATE "C"), serial);

COMMENT ON INDEX audit_log_by_serial IS
    'Lists an instance''s rows of all chains in the order they were appended; used by conditions on instance_id COLLATE "C" only, so that lookups of a chain''s rows always take the primary key';
