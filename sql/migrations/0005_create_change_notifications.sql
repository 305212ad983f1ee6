-- Change notifications for cache invalidation across server processes.
-- Every committed insert, update or delete of an instance, an access token or
-- an OTP device sends a JSON payload on the channel taler_otp_changes:
--   {"kind":"instance","instance":"<instance id>"}
--   {"kind":"tokens","instance":"<instance id>"}
--   {"kind":"device","instance":"<instance id>","device":"<device id>"}
-- Rows deleted together with their instance send nothing of their own: the
-- instance notification covers them.

CREATE FUNCTION notify_instance_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('taler_otp_changes',
            json_build_object('kind', 'instance', 'instance', OLD.instance_id)::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('taler_otp_changes',
            json_build_object('kind', 'instance', 'instance', NEW.instance_id)::text);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION notify_instance_change() IS
    'Trigger function: NOTIFY taler_otp_changes with {"kind":"instance"} for a changed instance';

CREATE TRIGGER instances_notify_insert_delete
    AFTER INSERT OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION notify_instance_change();
CREATE TRIGGER instances_notify_update
    AFTER UPDATE ON instances
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION notify_instance_change();

CREATE FUNCTION notify_access_token_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    changed_instance_id TEXT;
BEGIN
    SELECT instance_id INTO changed_instance_id
      FROM instances
     WHERE instance_serial = CASE WHEN TG_OP = 'DELETE'
                                  THEN OLD.instance_serial
                                  ELSE NEW.instance_serial END;
    IF changed_instance_id IS NOT NULL THEN
        PERFORM pg_notify('taler_otp_changes',
            json_build_object('kind', 'tokens', 'instance', changed_instance_id)::text);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION notify_access_token_change() IS
    'Trigger function: NOTIFY taler_otp_changes with {"kind":"tokens"} for the instance of a changed access token';

CREATE TRIGGER access_tokens_notify_insert_delete
    AFTER INSERT OR DELETE ON access_tokens
    FOR EACH ROW EXECUTE FUNCTION notify_access_token_change();
CREATE TRIGGER access_tokens_notify_update
    AFTER UPDATE ON access_tokens
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION notify_access_token_change();

CREATE FUNCTION notify_otp_device_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    changed_instance_id TEXT;
    changed_device_id TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT instance_id INTO changed_instance_id
          FROM instances WHERE instance_serial = OLD.instance_serial;
        changed_device_id := OLD.otp_device_id;
    ELSE
        SELECT instance_id INTO changed_instance_id
          FROM instances WHERE instance_serial = NEW.instance_serial;
        changed_device_id := NEW.otp_device_id;
    END IF;
    IF changed_instance_id IS NOT NULL THEN
        PERFORM pg_notify('taler_otp_changes',
            json_build_object('kind', 'device',
                              'instance', changed_instance_id,
                              'device', changed_device_id)::text);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION notify_otp_device_change() IS
    'Trigger function: NOTIFY taler_otp_changes with {"kind":"device"} for a changed OTP device';

CREATE TRIGGER otp_devices_notify_insert_delete
    AFTER INSERT OR DELETE ON otp_devices
    FOR EACH ROW EXECUTE FUNCTION notify_otp_device_change();
CREATE TRIGGER otp_devices_notify_update
    AFTER UPDATE ON otp_devices
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION notify_otp_device_change();
