-- The instance password that logs in at POST /private/token (HTTP Basic,
-- user: the instance id), stored as an Argon2id hash in PHC string format.
-- Expand only: a nullable column the previous binary does not read.
-- Refreshable tokens need no column: their scope ends in ":refreshable"
-- (older rows: ".refreshable"; the server reads both).

ALTER TABLE instances
    ADD COLUMN password_hash TEXT
        CHECK (password_hash ~ '^\$argon2(id|i|d)\$');

COMMENT ON COLUMN instances.password_hash IS
    'Argon2 hash (PHC string, $argon2id$v=19$m=...,t=...,p=...$salt$hash) of the instance password for HTTP Basic logins at /private/token; NULL: no password, Basic logins fail';
