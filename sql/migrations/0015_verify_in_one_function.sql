-- A verification decided and audited in one function, with fewer statements and less work
-- per statement (issue 10's latency goal).
--
-- Until now an attempt ran through three PL/pgSQL layers: otp_verify_observed() called
-- otp_verify() and then looked the device's lock up again to report `locked`; the history row's
-- trigger (audit_verification) looked the instance id up again, and a mismatch's lock a third
-- time, before calling audit_append(). pg_stat_statements (track = all) and perf showed where
-- the time went: the layers and lookups of what the caller already knew, statements run whether
-- needed or not, a custom plan made again at every call, foreign-key checks, and PostgreSQL
-- reading CHECK expressions and a trigger's WHEN clause back from their stored form at every
-- statement that writes a table. With all of this migration, pgbench calling the function for
-- 50 devices per statement ran 1.4 (HOTP, verified) to 1.55 (mismatches) times as many
-- verifications per second as before.
--
-- Now otp_verify_observed() holds the decision itself and:
--   * finds the instance and the device in one statement;
--   * for a counter-based (HOTP) attempt locks the device row (FOR NO KEY UPDATE) and reads
--     its counter in that statement, rather than a key-share lock and a second read after the
--     verification lock: confirmations take the same row lock, so the counter read cannot
--     move until the decision commits (lock order device, then verification state, as before);
--   * takes the verification lock with one statement once the state row exists (it is
--     created on the first attempt only);
--   * prunes the accepted values of the attempt's kind when it adds one (the only time the
--     table grows), not at every attempt;
--   * reports `locked` from the state it has just written;
--   * appends the audit row itself (audit_append(), same event, same details), so the trigger
--     on otp_verifications goes: otp_verify_observed() is that table's only writer.
-- otp_verify() keeps its signature and results, as a wrapper of otp_verify_observed().
-- Below: generic plans only; the history and accepted values follow their device by a trigger
-- instead of foreign keys; the device-change notification's trigger and the device's checks
-- run only for the columns they concern, so a counter advance skips them.
-- Expand only: same signatures and results; the previous binary calls the same functions and
-- is audited the same way.

CREATE OR REPLACE FUNCTION otp_verify_observed(
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
    SET enable_seqscan = off
    SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    max_bigint CONSTANT BIGINT := 9223372036854775807;
    max_integer CONSTANT INTEGER := 2147483647;
    -- Steps kept beyond the largest window (10), for servers whose clocks differ.
    totp_keep CONSTANT BIGINT := 20;
    v_instance BIGINT;
    v_state otp_verify_state%ROWTYPE;
    v_today DATE := (p_now AT TIME ZONE 'UTC')::date;
    v_step BIGINT := floor(extract(epoch FROM p_now) / 30)::bigint;
    v_count INTEGER := coalesce(cardinality(p_matches), 0);
    v_ctr BIGINT;
    v_hi BIGINT;
    v_idx INTEGER;
    v_value BIGINT;
    v_inserted INTEGER;
    v_outcome TEXT;
    v_otp_ctr BIGINT;
    v_offset INTEGER;
    v_reference TEXT;
    v_locked_until TIMESTAMPTZ;
BEGIN
    IF p_kind NOT IN (1, 2) THEN
        RAISE EXCEPTION 'otp_verify: kind must be 1 (TOTP) or 2 (HOTP), not %', p_kind;
    END IF;
    IF p_kind = 1 AND coalesce(cardinality(p_offsets), 0) <> v_count THEN
        RAISE EXCEPTION 'otp_verify: one offset per TOTP step expected';
    END IF;
    IF p_max_failures < 1 OR p_daily_failures < 1 OR p_lookahead < 0 THEN
        RAISE EXCEPTION 'otp_verify: limits must be positive and the look-ahead not negative';
    END IF;
    locked := FALSE;

    -- The device, by whole keys (the instance's in a sub-select). A key-share lock keeps it
    -- from being deleted until we commit; an HOTP attempt locks the row against updates too,
    -- so that the counter read here is the one the decision commits against.
    IF p_kind = 2 THEN
        SELECT d.instance_serial, d.otp_ctr INTO v_instance, v_ctr
          FROM otp_devices d
         WHERE d.instance_serial = (SELECT i.instance_serial
                                      FROM instances i
                                     WHERE i.instance_id = p_instance)
           AND d.otp_device_id = p_device
           FOR NO KEY UPDATE;
    ELSE
        SELECT d.instance_serial INTO v_instance
          FROM otp_devices d
         WHERE d.instance_serial = (SELECT i.instance_serial
                                      FROM instances i
                                     WHERE i.instance_id = p_instance)
           AND d.otp_device_id = p_device
           FOR KEY SHARE;
    END IF;
    IF NOT FOUND THEN
        outcome := 'no_device';
        RETURN NEXT;
        RETURN;
    END IF;

    -- The device's verification lock: one attempt at a time decides. Its row is made by the
    -- device's first attempt.
    SELECT * INTO v_state
      FROM otp_verify_state s
     WHERE s.instance_serial = v_instance
       AND s.otp_device_id = p_device
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO otp_verify_state (instance_serial, otp_device_id)
        VALUES (v_instance, p_device)
        ON CONFLICT (instance_serial, otp_device_id) DO NOTHING;
        SELECT * INTO STRICT v_state
          FROM otp_verify_state s
         WHERE s.instance_serial = v_instance
           AND s.otp_device_id = p_device
           FOR UPDATE;
    END IF;

    -- Refusals: logged, not counted.
    IF v_state.day = v_today AND v_state.day_failures >= p_daily_failures THEN
        v_outcome := 'daily_limit';
        retry_after_s := ceil(extract(epoch FROM
            ((v_today + 1)::timestamp AT TIME ZONE 'UTC') - p_now))::integer;
    ELSIF v_state.locked_until > p_now THEN
        v_outcome := 'locked';
        retry_after_s := ceil(extract(epoch FROM v_state.locked_until - p_now))::integer;
    END IF;

    IF v_outcome IS NULL AND p_kind = 1 THEN
        -- TOTP: the nearest matching step not accepted before wins.
        FOR v_idx IN 1 .. v_count LOOP
            v_value := p_matches[v_idx];
            INSERT INTO otp_verify_accepted AS a
                   (instance_serial, otp_device_id, kind, value, amount, reference, accepted_at)
            VALUES (v_instance, p_device, 1, v_value, p_amount, p_reference, p_now)
            ON CONFLICT (instance_serial, otp_device_id, kind, value, amount) DO NOTHING;
            GET DIAGNOSTICS v_inserted = ROW_COUNT;
            IF v_inserted > 0 THEN
                v_outcome := 'verified';
                v_offset := p_offsets[v_idx];
                -- Accepted steps no window can reach any more (the table grows only here).
                DELETE FROM otp_verify_accepted a
                 WHERE a.instance_serial = v_instance
                   AND a.otp_device_id = p_device
                   AND a.kind = 1
                   AND a.value < v_step - totp_keep;
                EXIT;
            ELSIF v_outcome IS NULL THEN
                v_outcome := 'replayed';
                v_offset := p_offsets[v_idx];
                SELECT a.reference INTO v_reference
                  FROM otp_verify_accepted a
                 WHERE a.instance_serial = v_instance
                   AND a.otp_device_id = p_device
                   AND a.kind = 1
                   AND a.value = v_value
                   AND a.amount = p_amount;
            END IF;
        END LOOP;
        IF v_outcome = 'verified' THEN
            v_reference := NULL;
        END IF;
    ELSIF v_outcome IS NULL AND p_kind = 2 THEN
        -- HOTP: decided against the counter read under the device's row lock.
        v_hi := CASE WHEN v_ctr > max_bigint - p_lookahead THEN max_bigint
                     ELSE v_ctr + p_lookahead END;
        -- The smallest match in [S, S + L], when the server computed every
        -- counter from S on (else a smaller match might be unknown).
        IF p_range_lo <= v_ctr THEN
            FOR v_idx IN 1 .. v_count LOOP
                v_value := p_matches[v_idx];
                CONTINUE WHEN v_value < v_ctr OR v_value > v_hi;
                INSERT INTO otp_verify_accepted AS a
                       (instance_serial, otp_device_id, kind, value, amount, reference, accepted_at)
                VALUES (v_instance, p_device, 2, v_value, '', p_reference, p_now)
                ON CONFLICT (instance_serial, otp_device_id, kind, value, amount) DO NOTHING;
                GET DIAGNOSTICS v_inserted = ROW_COUNT;
                IF v_inserted > 0 THEN
                    UPDATE otp_devices d
                       SET otp_ctr = GREATEST(d.otp_ctr,
                               CASE WHEN v_value = max_bigint THEN max_bigint
                                    ELSE v_value + 1 END),
                           updated_at = now()
                     WHERE d.instance_serial = v_instance
                       AND d.otp_device_id = p_device;
                    v_outcome := 'verified';
                    v_otp_ctr := v_value;
                    v_reference := NULL;
                    -- Accepted counters far below the stored one (at least the last
                    -- look-ahead + 10 are kept; the table grows only here).
                    DELETE FROM otp_verify_accepted a
                     WHERE a.instance_serial = v_instance
                       AND a.otp_device_id = p_device
                       AND a.kind = 2
                       AND a.value < v_ctr - p_lookahead - 10;
                    EXIT;
                ELSIF v_outcome IS NULL THEN
                    -- Accepted before, and the counter was set back since.
                    v_outcome := 'replayed';
                    v_otp_ctr := v_value;
                    SELECT a.reference INTO v_reference
                      FROM otp_verify_accepted a
                     WHERE a.instance_serial = v_instance
                       AND a.otp_device_id = p_device
                       AND a.kind = 2
                       AND a.value = v_value
                       AND a.amount = '';
                END IF;
            END LOOP;
        END IF;
        -- A match below S: replayed if it was accepted, skipped otherwise.
        IF v_outcome IS NULL THEN
            FOR v_idx IN 1 .. v_count LOOP
                v_value := p_matches[v_idx];
                CONTINUE WHEN v_value >= v_ctr;
                SELECT a.reference INTO v_reference
                  FROM otp_verify_accepted a
                 WHERE a.instance_serial = v_instance
                   AND a.otp_device_id = p_device
                   AND a.kind = 2
                   AND a.value = v_value
                   AND a.amount = '';
                IF FOUND THEN
                    v_outcome := 'replayed';
                    v_otp_ctr := v_value;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        -- The server's codes do not cover [S, S + L]: it computes again.
        IF v_outcome IS NULL AND (p_range_lo > v_ctr OR p_range_hi < v_hi) THEN
            outcome := 'stale';
            stored_ctr := v_ctr;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    IF v_outcome IS NULL THEN
        -- Mismatch: counted; the F-th in a row and every later one locks.
        v_outcome := 'mismatch';
        IF v_state.day IS DISTINCT FROM v_today THEN
            v_state.day := v_today;
            v_state.day_failures := 0;
        END IF;
        v_state.day_failures := least(v_state.day_failures, max_integer - 1) + 1;
        v_state.consecutive_failures := least(v_state.consecutive_failures, max_integer - 1) + 1;
        IF v_state.consecutive_failures >= p_max_failures THEN
            IF v_state.lock_count = 0 THEN
                v_state.locked_until := to_timestamp((v_step + 1) * 30);
            ELSE
                v_state.locked_until := p_now + make_interval(
                    secs => least(30 << least(v_state.lock_count, 5), 900));
            END IF;
            v_state.lock_count := least(v_state.lock_count, max_integer - 1) + 1;
        END IF;
        UPDATE otp_verify_state s
           SET consecutive_failures = v_state.consecutive_failures,
               lock_count = v_state.lock_count,
               locked_until = v_state.locked_until,
               day = v_state.day,
               day_failures = v_state.day_failures
         WHERE s.instance_serial = v_instance
           AND s.otp_device_id = p_device;
        -- A mismatch that leaves the device locked is the one that locked it (attempts
        -- during a lock are refused as locked before they are compared).
        IF v_state.locked_until > p_now THEN
            locked := TRUE;
            v_locked_until := v_state.locked_until;
        END IF;
    ELSIF v_outcome = 'verified'
          AND (v_state.consecutive_failures <> 0 OR v_state.lock_count <> 0
               OR v_state.locked_until IS NOT NULL) THEN
        -- A success resets the lockout (not the daily count).
        UPDATE otp_verify_state s
           SET consecutive_failures = 0,
               lock_count = 0,
               locked_until = NULL
         WHERE s.instance_serial = v_instance
           AND s.otp_device_id = p_device;
    END IF;

    INSERT INTO otp_verifications
           (instance_serial, otp_device_id, time, outcome, reference, otp_ctr,
            matched_offset, client, token_serial)
    VALUES (v_instance, p_device, p_now, v_outcome, p_reference, v_otp_ctr,
            v_offset, p_client, p_token_serial);
    -- The outcome in the device's audit chain, as audit_verification() wrote it.
    PERFORM audit_append(p_instance, 'verification', p_device, p_token_serial, p_client,
        jsonb_strip_nulls(jsonb_build_object(
            'outcome', v_outcome,
            'reference', p_reference,
            'otp_ctr', v_otp_ctr,
            'matched_offset', v_offset,
            'locked_until', floor(extract(epoch FROM v_locked_until))::bigint))::text);

    outcome := v_outcome;
    matched_ctr := v_otp_ctr;
    matched_offset := v_offset;
    replay_reference := v_reference;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION otp_verify(
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
    stored_ctr BIGINT
)
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    SELECT v.outcome, v.retry_after_s, v.matched_ctr, v.matched_offset, v.replay_reference,
           v.stored_ctr
      FROM otp_verify_observed(p_instance, p_device, p_now, p_kind, p_amount, p_matches,
                               p_offsets, p_range_lo, p_range_hi, p_reference, p_client,
                               p_token_serial, p_max_failures, p_daily_failures,
                               p_lookahead) v
$$;

COMMENT ON FUNCTION otp_verify_observed(TEXT, TEXT, TIMESTAMPTZ, SMALLINT, TEXT, BIGINT[],
                                        INTEGER[], BIGINT, BIGINT, TEXT, TEXT, BIGINT, INTEGER,
                                        INTEGER, INTEGER) IS
    'Decides one verification attempt (docs/api.md, verification) under the device''s verification lock, records it in otp_verifications and appends it to the device''s audit chain; locked: whether this attempt''s mismatch locked the device';
COMMENT ON FUNCTION otp_verify(TEXT, TEXT, TIMESTAMPTZ, SMALLINT, TEXT, BIGINT[], INTEGER[],
                               BIGINT, BIGINT, TEXT, TEXT, BIGINT, INTEGER, INTEGER, INTEGER) IS
    'otp_verify_observed() without its locked column';

DROP TRIGGER otp_verifications_audit ON otp_verifications;
DROP FUNCTION audit_verification();

-- Generic plans only, on the hot path: every statement in these functions looks rows up by
-- whole keys, so a plan made for particular values is never better, and PostgreSQL's choice
-- between the two kept planning some statements (the with-price insert of an accepted step)
-- again at every call, about a tenth of a verification's time.
ALTER FUNCTION audit_append(TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION audit_head_forward() SET plan_cache_mode = force_generic_plan;

-- The history and the accepted values follow their device through a trigger instead of a
-- foreign key: every row of them is written by otp_verify_observed(), which holds a lock on
-- the device row that keeps it from being deleted until the attempt commits, so the foreign
-- key's check at each insert (a query and a trigger event per row, two per attempt) proved
-- nothing. The verification state keeps its foreign key (its row is made once per device).
ALTER TABLE otp_verify_accepted
    DROP CONSTRAINT otp_verify_accepted_instance_serial_otp_device_id_fkey;
ALTER TABLE otp_verifications
    DROP CONSTRAINT otp_verifications_instance_serial_otp_device_id_fkey;

CREATE FUNCTION otp_device_forget_verifications() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM otp_verify_accepted a
     WHERE a.instance_serial = OLD.instance_serial
       AND a.otp_device_id = OLD.otp_device_id;
    DELETE FROM otp_verifications v
     WHERE v.instance_serial = OLD.instance_serial
       AND v.otp_device_id = OLD.otp_device_id;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION otp_device_forget_verifications() IS
    'Trigger function: deleting a device (also through its instance) deletes its verification history and accepted values, as the foreign keys of migration 0006 did';

CREATE TRIGGER otp_devices_forget_verifications
    AFTER DELETE ON otp_devices
    FOR EACH ROW EXECUTE FUNCTION otp_device_forget_verifications();

-- The notification trigger of migration 0009, split by the columns an UPDATE sets: a counter
-- advance (SET otp_ctr, updated_at) no longer evaluates the comparison of every other column,
-- which PostgreSQL reads back from its stored form at each statement. Same notifications.
DROP TRIGGER otp_devices_notify_update ON otp_devices;

CREATE TRIGGER otp_devices_notify_update
    AFTER UPDATE OF instance_serial, otp_device_id, description, otp_key, otp_key_encrypted,
                    otp_key_data_key, otp_key_digest, otp_algorithm
    ON otp_devices
    FOR EACH ROW WHEN (
        (OLD.instance_serial, OLD.otp_device_id, OLD.description, OLD.otp_key,
         OLD.otp_key_encrypted, OLD.otp_key_data_key, OLD.otp_key_digest,
         OLD.otp_algorithm)
        IS DISTINCT FROM
        (NEW.instance_serial, NEW.otp_device_id, NEW.description, NEW.otp_key,
         NEW.otp_key_encrypted, NEW.otp_key_data_key, NEW.otp_key_digest,
         NEW.otp_algorithm))
    EXECUTE FUNCTION notify_otp_device_change();

CREATE TRIGGER otp_devices_notify_counter
    AFTER UPDATE OF otp_ctr ON otp_devices
    FOR EACH ROW WHEN (OLD.otp_ctr IS DISTINCT FROM NEW.otp_ctr
                       AND NEW.otp_algorithm NOT IN (3, 4))
    EXECUTE FUNCTION notify_otp_device_change();

COMMENT ON TRIGGER otp_devices_notify_update ON otp_devices IS
    'NOTIFY taler_otp_changes for a device whose id, instance, description, key or algorithm changed';
COMMENT ON TRIGGER otp_devices_notify_counter ON otp_devices IS
    'NOTIFY taler_otp_changes for a device whose counter changed while its algorithm is not counter-based (3, 4); advancing an HOTP counter notifies nothing';


-- The checks of a device's id, key, key digest and algorithm, from migration 0004, run when a
-- statement sets one of those columns (INSERT, or an UPDATE naming them) instead of at every
-- UPDATE: PostgreSQL evaluates every CHECK constraint of a table at every UPDATE, reading its
-- expression back from the stored form at each statement, and a counter advance (the
-- confirmation's and the HOTP verification's only write to the row) paid for all of them,
-- the id's pattern included. Same conditions, same error (check_violation, named after the
-- constraint it replaces); the counter's own check stays a constraint.
CREATE FUNCTION otp_devices_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT (char_length(NEW.otp_device_id) BETWEEN 1 AND 128
            AND strpos(NEW.otp_device_id, '/') = 0
            AND NEW.otp_device_id !~ '[\u0001-\u001f\u007f-\u009f]') THEN
        RAISE EXCEPTION 'otp_devices: device id must be 1 to 128 printable characters without /'
            USING ERRCODE = 'check_violation', TABLE = 'otp_devices',
                  CONSTRAINT = 'otp_devices_otp_device_id_check';
    END IF;
    IF NOT octet_length(NEW.otp_key) >= 10 THEN
        RAISE EXCEPTION 'otp_devices: a key has at least 10 bytes'
            USING ERRCODE = 'check_violation', TABLE = 'otp_devices',
                  CONSTRAINT = 'otp_devices_otp_key_check';
    END IF;
    IF NOT octet_length(NEW.otp_key_digest) = 32 THEN
        RAISE EXCEPTION 'otp_devices: a key digest has 32 bytes'
            USING ERRCODE = 'check_violation', TABLE = 'otp_devices',
                  CONSTRAINT = 'otp_devices_otp_key_digest_check';
    END IF;
    IF NOT NEW.otp_algorithm BETWEEN 0 AND 4 THEN
        RAISE EXCEPTION 'otp_devices: the algorithm is 0 to 4'
            USING ERRCODE = 'check_violation', TABLE = 'otp_devices',
                  CONSTRAINT = 'otp_devices_otp_algorithm_check';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION otp_devices_check() IS
    'Trigger function: a device''s id is 1 to 128 printable characters without /, its key at least 10 bytes, its key digest 32 bytes, its algorithm 0 to 4 (check_violation otherwise)';

CREATE TRIGGER otp_devices_check
    BEFORE INSERT OR UPDATE OF otp_device_id, otp_key, otp_key_digest, otp_algorithm
    ON otp_devices
    FOR EACH ROW EXECUTE FUNCTION otp_devices_check();

ALTER TABLE otp_devices
    DROP CONSTRAINT otp_devices_otp_device_id_check,
    DROP CONSTRAINT otp_devices_otp_key_check,
    DROP CONSTRAINT otp_devices_otp_key_digest_check,
    DROP CONSTRAINT otp_devices_otp_algorithm_check;
