-- Plans that stay right while the tables grow: the functions on the hot path look rows up
-- by whole keys only, and never plan a sequential scan.
--
-- PL/pgSQL caches a generic plan for each statement of a function per session, made once
-- after a few calls. On a young database the tables are tiny at that moment, so the planner
-- chose sequential scans (cheaper on a page or two), or a join that scans the device index by
-- its second column, and the session kept those plans while otp_verify_state,
-- otp_verify_accepted, audit_log and otp_devices grew: until autovacuum's next ANALYZE, every
-- verification and audit append read the whole table. Verifications ran 5 to 30 times slower,
-- depending on when autovacuum came by.
--
-- Now otp_verify() finds the device by its whole key after finding the instance (no join),
-- otp_verify_observed() likewise, and the functions run with enable_seqscan off, so their
-- cached plans use the primary keys whatever the size of the tables when they were made
-- (a sequential scan stays possible where no index applies). Foreign-key checks planned
-- inside them inherit the setting.
-- Expand only: same signatures and results; the previous binary is unaffected.

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
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
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

    -- The device; KEY SHARE keeps it from being deleted until we commit. Two lookups by
    -- whole keys rather than a join, so that no cached plan can scan instead.
    SELECT i.instance_serial INTO v_instance
      FROM instances i
     WHERE i.instance_id = p_instance;
    PERFORM 1
       FROM otp_devices d
      WHERE d.instance_serial = v_instance
        AND d.otp_device_id = p_device
        FOR KEY SHARE;
    IF NOT FOUND THEN
        outcome := 'no_device';
        RETURN NEXT;
        RETURN;
    END IF;

    -- The device's verification lock: one attempt at a time decides.
    INSERT INTO otp_verify_state (instance_serial, otp_device_id)
    VALUES (v_instance, p_device)
    ON CONFLICT (instance_serial, otp_device_id) DO NOTHING;
    SELECT * INTO STRICT v_state
      FROM otp_verify_state s
     WHERE s.instance_serial = v_instance
       AND s.otp_device_id = p_device
       FOR UPDATE;

    -- Refusals: logged, not counted.
    IF v_state.day = v_today AND v_state.day_failures >= p_daily_failures THEN
        v_outcome := 'daily_limit';
        retry_after_s := ceil(extract(epoch FROM
            ((v_today + 1)::timestamp AT TIME ZONE 'UTC') - p_now))::integer;
    ELSIF v_state.locked_until > p_now THEN
        v_outcome := 'locked';
        retry_after_s := ceil(extract(epoch FROM v_state.locked_until - p_now))::integer;
    END IF;

    IF v_outcome IS NULL THEN
        -- Accepted steps no window can reach any more.
        DELETE FROM otp_verify_accepted a
         WHERE a.instance_serial = v_instance
           AND a.otp_device_id = p_device
           AND a.kind = 1
           AND a.value < v_step - totp_keep;
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
        -- HOTP: decided against the counter as stored now, under the lock.
        SELECT d.otp_ctr INTO STRICT v_ctr
          FROM otp_devices d
         WHERE d.instance_serial = v_instance
           AND d.otp_device_id = p_device;
        v_hi := CASE WHEN v_ctr > max_bigint - p_lookahead THEN max_bigint
                     ELSE v_ctr + p_lookahead END;
        -- Accepted counters far below the stored one (at least the last
        -- look-ahead + 10 are kept).
        DELETE FROM otp_verify_accepted a
         WHERE a.instance_serial = v_instance
           AND a.otp_device_id = p_device
           AND a.kind = 2
           AND a.value < v_ctr - p_lookahead - 10;
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

    outcome := v_outcome;
    matched_ctr := v_otp_ctr;
    matched_offset := v_offset;
    replay_reference := v_reference;
    RETURN NEXT;
END
$$;

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
AS $$
#variable_conflict use_column
DECLARE
    v_decision RECORD;
    v_instance BIGINT;
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
    -- Separate statements: they see the state otp_verify() left.
    locked := FALSE;
    IF v_decision.outcome = 'mismatch' THEN
        SELECT i.instance_serial INTO v_instance
          FROM instances i
         WHERE i.instance_id = p_instance;
        locked := EXISTS (
            SELECT 1
              FROM otp_verify_state s
             WHERE s.instance_serial = v_instance
               AND s.otp_device_id = p_device
               AND s.locked_until > p_now);
    END IF;
    RETURN NEXT;
END
$$;

ALTER FUNCTION otp_verify(TEXT, TEXT, TIMESTAMPTZ, SMALLINT, TEXT, BIGINT[], INTEGER[], BIGINT,
                          BIGINT, TEXT, TEXT, BIGINT, INTEGER, INTEGER, INTEGER)
    SET enable_seqscan = off;
ALTER FUNCTION otp_verify_observed(TEXT, TEXT, TIMESTAMPTZ, SMALLINT, TEXT, BIGINT[], INTEGER[],
                                   BIGINT, BIGINT, TEXT, TEXT, BIGINT, INTEGER, INTEGER, INTEGER)
    SET enable_seqscan = off;
ALTER FUNCTION audit_append(TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT) SET enable_seqscan = off;
ALTER FUNCTION audit_verification() SET enable_seqscan = off;
ALTER FUNCTION audit_head_forward() SET enable_seqscan = off;
