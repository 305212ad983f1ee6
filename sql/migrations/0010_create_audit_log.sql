-- The audit trail (docs/audit.md): an append-only log per instance of what
-- was done, by which token, from which address, in a hash chain.
--
-- audit_append() is the one writer: it locks the instance's chain head
-- (audit_heads, FOR UPDATE), so concurrent appends of one instance serialize
-- and never fork the chain, computes the row's SHA-256 over its content and
-- the previous row's hash (audit_hash()), inserts the row and moves the head,
-- all inside the caller's statement and transaction. Changing or deleting an
-- earlier row breaks the chain, which `taler-otp audit verify` detects.
-- Triggers refuse UPDATE, DELETE and TRUNCATE of the log, deleting the heads,
-- and moving a head anywhere but to the row just appended.
--
-- The log keeps the instance id as text, without a foreign key: deleting an
-- instance leaves its trail; an instance created again under the same id
-- continues it.
--
-- Verification outcomes are appended by a trigger on otp_verifications, so
-- every writer of that table (also a previous binary) is audited;
-- otp_verify_observed() wraps otp_verify() and also reports whether a
-- mismatch locked the device.
-- Expand only: new tables, functions and triggers; the previous binary's
-- statements keep working (its verifications are audited by the trigger).

CREATE TABLE audit_heads (
    instance_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL CHECK (seq >= 0),
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32)
);

COMMENT ON TABLE audit_heads IS
    'The head of each instance''s audit chain: the last row appended; its row is the lock that serializes appends of one instance';
COMMENT ON COLUMN audit_heads.instance_id IS
    'The instance (its public id; no foreign key: the trail outlives the instance)';
COMMENT ON COLUMN audit_heads.seq IS
    'Sequence number of the last row appended (0: none yet)';
COMMENT ON COLUMN audit_heads.hash IS
    'Hash of the last row appended (32 zero bytes: none yet); the next row''s prev_hash';

CREATE TABLE audit_log (
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq >= 1),
    time TIMESTAMPTZ NOT NULL,
    event TEXT NOT NULL,
    device_id TEXT,
    token_serial BIGINT,
    client TEXT,
    details TEXT NOT NULL,
    prev_hash BYTEA NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (instance_id, seq)
);

COMMENT ON TABLE audit_log IS
    'Append-only audit trail of each instance, a SHA-256 hash chain (docs/audit.md); written only by audit_append()';
COMMENT ON COLUMN audit_log.instance_id IS
    'The instance (its public id; no foreign key: the trail outlives the instance)';
COMMENT ON COLUMN audit_log.seq IS
    'Position in the instance''s chain: 1, 2, 3, ... without gaps';
COMMENT ON COLUMN audit_log.time IS
    'When the audited action''s transaction started (the database''s now())';
COMMENT ON COLUMN audit_log.event IS
    'device_created, device_changed, device_deleted, token_created, token_revoked, confirmation_issued, verification, login_success or login_failure';
COMMENT ON COLUMN audit_log.device_id IS
    'The device acted on, if any';
COMMENT ON COLUMN audit_log.token_serial IS
    'The access token that authorized the action (access_tokens.token_serial); NULL for password logins and operator commands';
COMMENT ON COLUMN audit_log.client IS
    'The client''s address as the server saw it; local for operator commands';
COMMENT ON COLUMN audit_log.details IS
    'The event''s particulars as a JSON object (never a key or a secret), hashed as stored';
COMMENT ON COLUMN audit_log.prev_hash IS
    'The hash of the previous row of the chain (32 zero bytes for the first)';
COMMENT ON COLUMN audit_log.hash IS
    'SHA-256 over this row''s content and prev_hash (audit_hash())';

CREATE FUNCTION audit_field(p_value BYTEA) RETURNS BYTEA
    LANGUAGE sql
    IMMUTABLE
    SET search_path FROM CURRENT
AS $$
    SELECT CASE WHEN p_value IS NULL THEN '\xffffffff'::bytea
                ELSE int4send(octet_length(p_value)) || p_value END
$$;

COMMENT ON FUNCTION audit_field(BYTEA) IS
    'One field of the hashed byte string: its length as 4 bytes big-endian, then its bytes; NULL is the length 0xffffffff alone';

CREATE FUNCTION audit_hash(
    p_instance TEXT,
    p_seq BIGINT,
    p_time TIMESTAMPTZ,
    p_event TEXT,
    p_device TEXT,
    p_token_serial BIGINT,
    p_client TEXT,
    p_details TEXT,
    p_prev_hash BYTEA
) RETURNS BYTEA
    LANGUAGE sql
    STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT sha256(
           audit_field(convert_to('taler-otp-audit-v1', 'UTF8'))
        || audit_field(convert_to(p_instance, 'UTF8'))
        || audit_field(convert_to(p_seq::text, 'UTF8'))
        || audit_field(convert_to((extract(epoch FROM p_time) * 1000000)::bigint::text, 'UTF8'))
        || audit_field(convert_to(p_event, 'UTF8'))
        || audit_field(convert_to(p_device, 'UTF8'))
        || audit_field(convert_to(p_token_serial::text, 'UTF8'))
        || audit_field(convert_to(p_client, 'UTF8'))
        || audit_field(convert_to(p_details, 'UTF8'))
        || audit_field(p_prev_hash))
$$;

COMMENT ON FUNCTION audit_hash(TEXT, BIGINT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, TEXT, TEXT, BYTEA) IS
    'The hash of an audit row (docs/audit.md): SHA-256 over the fields, each as audit_field() of its UTF-8 text (numbers in decimal, the time in microseconds since the epoch), in the order tag taler-otp-audit-v1, instance, seq, time, event, device, token serial, client, details, previous hash';

CREATE FUNCTION audit_append(
    p_instance TEXT,
    p_event TEXT,
    p_device TEXT,
    p_token_serial BIGINT,
    p_client TEXT,
    p_details TEXT
) RETURNS BIGINT
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    v_seq BIGINT;
    v_prev BYTEA;
    v_time TIMESTAMPTZ := now();
    v_details TEXT := coalesce(p_details, '{}');
    v_hash BYTEA;
BEGIN
    -- The chain head, locked until the caller's transaction ends.
    SELECT h.seq, h.hash INTO v_seq, v_prev
      FROM audit_heads h
     WHERE h.instance_id = p_instance
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_heads (instance_id, seq, hash)
        VALUES (p_instance, 0, decode(repeat('00', 32), 'hex'))
        ON CONFLICT (instance_id) DO NOTHING;
        SELECT h.seq, h.hash INTO STRICT v_seq, v_prev
          FROM audit_heads h
         WHERE h.instance_id = p_instance
           FOR UPDATE;
    END IF;
    v_seq := v_seq + 1;
    v_hash := audit_hash(p_instance, v_seq, v_time, p_event, p_device, p_token_serial,
                         p_client, v_details, v_prev);
    INSERT INTO audit_log (instance_id, seq, time, event, device_id, token_serial, client,
                           details, prev_hash, hash)
    VALUES (p_instance, v_seq, v_time, p_event, p_device, p_token_serial, p_client,
            v_details, v_prev, v_hash);
    UPDATE audit_heads h
       SET seq = v_seq,
           hash = v_hash
     WHERE h.instance_id = p_instance;
    RETURN v_seq;
END
$$;

COMMENT ON FUNCTION audit_append(TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT) IS
    'Appends one row to the instance''s audit chain inside the caller''s transaction and returns its seq; the head''s row lock serializes appends of one instance until the transaction ends';

CREATE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

COMMENT ON FUNCTION audit_refuse_change() IS
    'Trigger function: refuses changing or removing audit rows and chain heads';

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_heads_no_delete
    BEFORE DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_heads_no_truncate
    BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE FUNCTION audit_head_forward() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.instance_id <> OLD.instance_id
       OR NEW.seq <> OLD.seq + 1
       OR NOT EXISTS (SELECT 1
                        FROM audit_log l
                       WHERE l.instance_id = NEW.instance_id
                         AND l.seq = NEW.seq
                         AND l.hash = NEW.hash
                         AND l.prev_hash = OLD.hash) THEN
        RAISE EXCEPTION 'an audit chain head moves only to the row appended after it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION audit_head_forward() IS
    'Trigger function: a chain head may only move one row forward, to the row whose prev_hash is its hash';

CREATE TRIGGER audit_heads_forward_only
    BEFORE UPDATE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward();

CREATE FUNCTION audit_verification() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    v_instance TEXT;
    v_locked_until TIMESTAMPTZ;
BEGIN
    SELECT i.instance_id INTO v_instance
      FROM instances i
     WHERE i.instance_serial = NEW.instance_serial;
    IF NEW.outcome = 'mismatch' THEN
        -- A mismatch recorded while the device is locked is the one that locked it
        -- (attempts during a lock are recorded as locked).
        SELECT s.locked_until INTO v_locked_until
          FROM otp_verify_state s
         WHERE s.instance_serial = NEW.instance_serial
           AND s.otp_device_id = NEW.otp_device_id
           AND s.locked_until > NEW.time;
    END IF;
    PERFORM audit_append(v_instance, 'verification', NEW.otp_device_id, NEW.token_serial,
        NEW.client,
        jsonb_strip_nulls(jsonb_build_object(
            'outcome', NEW.outcome,
            'reference', NEW.reference,
            'otp_ctr', NEW.otp_ctr,
            'matched_offset', NEW.matched_offset,
            'locked_until', floor(extract(epoch FROM v_locked_until))::bigint))::text);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION audit_verification() IS
    'Trigger function: appends a verification outcome (with locked_until when the mismatch locked the device) to the instance''s audit chain';

CREATE TRIGGER otp_verifications_audit
    AFTER INSERT ON otp_verifications
    FOR EACH ROW EXECUTE FUNCTION audit_verification();

CREATE FUNCTION otp_verify_observed(
    p_instance TEXT,
    p_device TEXT,
    p_now TIMESTAMPTZ,
    p_kind SMALLINT,
    p_amount TEXT,
    p_matches BIGINT[],
    p_offsets INTEGER[],
    p_range_lo BIGINT,
    p_range_hi BIGINT,
    p_reference TEXT,
    p_client TEXT,
    p_token_serial BIGINT,
    p_max_failures INTEGER,
    p_daily_failures INTEGER,
    p_lookahead INTEGER
) RETURNS TABLE (
    outcome TEXT,
    retry_after_s INTEGER,
    matched_ctr BIGINT,
    matched_offset INTEGER,
    replay_reference TEXT,
    stored_ctr BIGINT,
    locked BOOLEAN
)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_decision RECORD;
BEGIN
    SELECT * INTO STRICT v_decision
      FROM otp_verify(p_instance, p_device, p_now, p_kind, p_amount, p_matches, p_offsets,
                      p_range_lo, p_range_hi, p_reference, p_client, p_token_serial,
                      p_max_failures, p_daily_failures, p_lookahead);
    outcome := v_decision.outcome;
    retry_after_s := v_decision.retry_after_s;
    matched_ctr := v_decision.matched_ctr;
    matched_offset := v_decision.matched_offset;
    replay_reference := v_decision.replay_reference;
    stored_ctr := v_decision.stored_ctr;
    -- A separate statement: it sees the state otp_verify() left.
    locked := v_decision.outcome = 'mismatch' AND EXISTS (
        SELECT 1
          FROM otp_verify_state s
          JOIN instances i ON i.instance_serial = s.instance_serial
         WHERE i.instance_id = p_instance
           AND s.otp_device_id = p_device
           AND s.locked_until > p_now);
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION otp_verify_observed(TEXT, TEXT, TIMESTAMPTZ, SMALLINT, TEXT, BIGINT[],
                                        INTEGER[], BIGINT, BIGINT, TEXT, TEXT, BIGINT, INTEGER,
                                        INTEGER, INTEGER) IS
    'otp_verify() with one more column, locked: whether this attempt''s mismatch locked the device';
