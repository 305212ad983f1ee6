-- Counter advances no longer notify (issue 15).
--
-- The caches of the server processes promise what a device is (description,
-- key, algorithm), not the counter of a counter-based (HOTP) device: that
-- counter is taken by one UPDATE ... RETURNING per confirmation, decided by
-- otp_verify() per verification, and read fresh for GET one. So an update
-- that only moves the counter (and updated_at) of an HOTP device sends no
-- notification: a confirmation commits without taking the notification
-- queue's lock, on which notifying commits serialize, and leaves the
-- device cached in every process.
-- The counter of a device of another algorithm (NONE, TOTP) is shown from
-- the cache, so changing it still notifies, as does any change of the id,
-- the instance, the description, the key (any of its columns) or the
-- algorithm. Inserts and deletes notify as before.
-- Works with the previous binary still running: its caches serve an HOTP
-- counter for at most their age bound (CACHE_TTL_MS) without a notification,
-- which that bound already allowed for lost notifications.

DROP TRIGGER otp_devices_notify_update ON otp_devices;

CREATE TRIGGER otp_devices_notify_update
    AFTER UPDATE ON otp_devices
    FOR EACH ROW WHEN (
        (OLD.instance_serial, OLD.otp_device_id, OLD.description, OLD.otp_key,
         OLD.otp_key_encrypted, OLD.otp_key_data_key, OLD.otp_key_digest,
         OLD.otp_algorithm)
        IS DISTINCT FROM
        (NEW.instance_serial, NEW.otp_device_id, NEW.description, NEW.otp_key,
         NEW.otp_key_encrypted, NEW.otp_key_data_key, NEW.otp_key_digest,
         NEW.otp_algorithm)
        OR (OLD.otp_ctr IS DISTINCT FROM NEW.otp_ctr AND NEW.otp_algorithm NOT IN (3, 4)))
    EXECUTE FUNCTION notify_otp_device_change();

COMMENT ON TRIGGER otp_devices_notify_update ON otp_devices IS
    'NOTIFY taler_otp_changes for a device whose id, instance, description, key or algorithm changed, or whose counter changed while its algorithm is not counter-based (3, 4); advancing an HOTP counter (and updated_at) notifies nothing';
