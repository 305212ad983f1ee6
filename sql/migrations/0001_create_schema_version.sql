-- Records which numbered migrations have been applied to this database.
-- The runner in crates/store/src/migrate.rs inserts one row per file, in the
-- same transaction as the file itself.

CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY CHECK (version > 0),
    name TEXT NOT NULL,
    sha256 BYTEA NOT NULL CHECK (octet_length(sha256) = 32),
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE schema_version IS
    'One row per applied file of sql/migrations; the highest version is the schema version of this database';
COMMENT ON COLUMN schema_version.version IS
    'The NNNN number of the migration file';
COMMENT ON COLUMN schema_version.name IS
    'The file name of the migration, e.g. 0002_create_instances.sql';
COMMENT ON COLUMN schema_version.sha256 IS
    'SHA-256 of the file as applied; the runner refuses to start when an applied file was edited afterwards';
COMMENT ON COLUMN schema_version.applied_at IS
    'When the migration was committed';
