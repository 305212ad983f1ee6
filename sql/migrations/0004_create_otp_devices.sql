-- OTP devices of an instance (the merchant backend's /private/otp-devices).

CREATE TABLE otp_devices (
    instance_serial BIGINT NOT NULL
        REFERENCES instances (instance_serial) ON DELETE CASCADE,
    otp_device_id TEXT NOT NULL
        CHECK (char_length(otp_device_id) BETWEEN 1 AND 128
               AND strpos(otp_device_id, '/') = 0
               AND otp_device_id !~ '[\u0001-\u001f\u007f-\u009f]'),
    description TEXT NOT NULL,
    otp_key BYTEA NOT NULL CHECK (octet_length(otp_key) >= 10),
    otp_key_encrypted BOOLEAN NOT NULL DEFAULT FALSE,
    otp_key_digest BYTEA NOT NULL CHECK (octet_length(otp_key_digest) = 32),
    otp_algorithm SMALLINT NOT NULL CHECK (otp_algorithm BETWEEN 0 AND 4),
    otp_ctr BIGINT NOT NULL DEFAULT 0 CHECK (otp_ctr >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_serial, otp_device_id)
);

COMMENT ON TABLE otp_devices IS
    'OTP devices (point-of-sale confirmation generators) of an instance';
COMMENT ON COLUMN otp_devices.instance_serial IS
    'The instance the device belongs to';
COMMENT ON COLUMN otp_devices.otp_device_id IS
    'Public device id, unique within the instance: 1 to 128 printable characters without /';
COMMENT ON COLUMN otp_devices.description IS
    'Human-readable description of the device (otp_device_description)';
COMMENT ON COLUMN otp_devices.otp_key IS
    'The decoded OTP secret; when otp_key_encrypted, a 12-byte nonce followed by its ChaCha20-Poly1305 ciphertext';
COMMENT ON COLUMN otp_devices.otp_key_encrypted IS
    'Whether otp_key is encrypted with the key-encryption key (associated data: instance id and device id)';
COMMENT ON COLUMN otp_devices.otp_key_digest IS
    'HMAC-SHA256 over the decoded key, keyed from the key-encryption key or a fixed label; lets an idempotent POST compare keys inside the database';
COMMENT ON COLUMN otp_devices.otp_algorithm IS
    'Algorithm number: 0 none, 1 TOTP without price, 2 TOTP with price, 3 HOTP without price, 4 HOTP with price';
COMMENT ON COLUMN otp_devices.otp_ctr IS
    'Counter of counter-based (HOTP) devices: the next value to use; 0 to 2^63-1';
COMMENT ON COLUMN otp_devices.created_at IS
    'When the device was created';
COMMENT ON COLUMN otp_devices.updated_at IS
    'When the device was last changed (including counter advances)';
