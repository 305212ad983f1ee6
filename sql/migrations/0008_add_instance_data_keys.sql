-- Device keys at rest, second form (issue 16): each instance's device keys
-- are encrypted under a data key of its own (32 random bytes), stored here
-- wrapped by the key-encryption key (KEK), so that deleting an instance
-- deletes its data key and with it the means to decrypt its device keys.
-- A check value records which KEK the database's keys are encrypted with,
-- so that a server with a missing or wrong KEK refuses to start.
-- Expand only: nullable columns, a column with a default and a new table,
-- none of which the previous binary reads. The previous binary keeps
-- reading plaintext rows and rows in the first form (encrypted directly
-- under a subkey of the KEK); it cannot read rows in the second form.

ALTER TABLE instances
    ADD COLUMN data_key_wrapped BYTEA
        CHECK (octet_length(data_key_wrapped) = 60),
    ADD COLUMN data_key_kek_id BYTEA
        CHECK (octet_length(data_key_kek_id) = 8),
    ADD CONSTRAINT instances_data_key_with_kek_id
        CHECK ((data_key_wrapped IS NULL) = (data_key_kek_id IS NULL));

COMMENT ON COLUMN instances.data_key_wrapped IS
    'The instance''s data key, under which its device keys are encrypted: a 12-byte nonce and the ChaCha20-Poly1305 ciphertext of the 32-byte key under a subkey of the key-encryption key (associated data: the instance id); NULL until the first device key is encrypted';
COMMENT ON COLUMN instances.data_key_kek_id IS
    'Id of the key-encryption key that wrapped data_key_wrapped (the first 8 bytes of an HMAC of that key); taler-otp rekey rewraps the rows whose id is not the configured key''s';

ALTER TABLE otp_devices
    ADD COLUMN otp_key_data_key BOOLEAN NOT NULL DEFAULT FALSE;

COMMENT ON COLUMN otp_devices.otp_key_data_key IS
    'When otp_key_encrypted: true if otp_key is encrypted under the instance''s data key (instances.data_key_wrapped), false if directly under a subkey of the key-encryption key (rows written before migration 8); ignored for plaintext rows';

CREATE TABLE key_encryption_check (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    kek_id BYTEA NOT NULL CHECK (octet_length(kek_id) = 8),
    kek_check BYTEA NOT NULL CHECK (octet_length(kek_check) = 32),
    set_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE key_encryption_check IS
    'At most one row: the key-encryption key the device keys of this database are encrypted with; no row while no key is encrypted. Not per instance: one key-encryption key serves the whole database';
COMMENT ON COLUMN key_encryption_check.singleton IS
    'Always true: keeps the table to one row';
COMMENT ON COLUMN key_encryption_check.kek_id IS
    'Id of the key-encryption key, shown in messages and stored on the instances whose data key it wrapped';
COMMENT ON COLUMN key_encryption_check.kek_check IS
    'HMAC-SHA256 of a fixed label under the key-encryption key: a server whose configured key gives another value refuses to start';
COMMENT ON COLUMN key_encryption_check.set_at IS
    'When this key became the database''s key-encryption key (first encrypted key or the end of a rotation)';
