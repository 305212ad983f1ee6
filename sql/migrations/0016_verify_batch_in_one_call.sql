-- A batch of verification attempts decided in one function call, and a batch's audit rows
-- appended together (issue 10's latency goal).
--
-- The server sends the attempts that arrive together in one statement. Until now that statement
-- called otp_verify_observed() once per attempt (CROSS JOIN LATERAL), and each call paid for
-- itself: entering a PL/pgSQL function and saving and restoring its three settings (a new
-- search_path also makes PostgreSQL work the schema search path out again), the instance's
-- lookup, a nested audit_append() call with three settings of its own, and one statement each
-- for the history row, the accepted values' pruning, the chain head's lock, the audit row and
-- the head's move, which a trigger call checked. pg_stat_statements had put the audit append
-- alone at about 40 % of an attempt's time, most of it in calls, settings and executor set-up
-- rather than in writing.
--
-- otp_verify_batch() takes the whole batch (one element per attempt in each array) and decides
-- the attempts one after the other, in the order of (instance id, device id, position) as the
-- statement did, each against the state the previous ones left, with the statements of
-- otp_verify_observed() in migration 0015 and the same locks in the same order: each device's
-- row, then its verification state. What it does once per batch instead of once per attempt:
--   * looks each instance up once per run of its attempts;
--   * prunes, after the last decision, the accepted values no attempt can reach any more (one
--     DELETE; an attempt later in the same batch may therefore still find such a value and be
--     answered `replayed` where, alone, it would have been a mismatch: it was accepted before,
--     which is what replayed says);
--   * writes the history rows (one INSERT);
--   * appends the audit rows through audit_append_batch().
-- All of it is one transaction, as before: a batch is decided and recorded wholly or not at all.
--
-- audit_append_batch() appends many rows as audit_append() would one by one (same hashes, same
-- chains, rows of one chain in the order given): it locks the heads of all the rows' chains in
-- one SELECT ... FOR UPDATE, in the order of (instance id, chain) in bytes, inserts the rows in
-- one INSERT and moves the heads in one UPDATE per round (a head moves one row at a time, so a
-- chain with k rows takes k rounds). Called after the devices' own locks, as the confirmations'
-- batch statement, which now uses it too, calls it: every other writer of a device's chain
-- takes the device's lock first or conflicts with it. audit_append() stays for single events.
--
-- The guard that a head moves only one row forward (audit_head_forward(), a BEFORE UPDATE
-- trigger per row since migration 0010) checks each UPDATE statement as a whole instead, from
-- its transition tables (audit_heads_forward()): one trigger call per batch rather than one per
-- row. Same rule, same error.
--
-- otp_verify_observed() becomes a call of otp_verify_batch() with one attempt, so the decision
-- exists once; otp_verify() still wraps it.
-- Expand only: same signatures and results for otp_verify_observed(), otp_verify() and
-- audit_append(); the previous binary calls them as before.

-- Appends a batch of rows to their audit chains: what audit_append() does for each row, with
-- one statement per batch for each of its steps instead of one per row.
CREATE FUNCTION audit_append_batch(
    p_instances TEXT[],
    p_event TEXT,
    p_devices TEXT[],
    p_token_serials BIGINT[],
    p_clients TEXT[],
    p_details TEXT[]
) RETURNS INTEGER
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    SET enable_seqscan = off
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    zero_hash CONSTANT BYTEA := decode(repeat('00', 32), 'hex');
    v_count INTEGER := coalesce(cardinality(p_instances), 0);
    v_time TIMESTAMPTZ := now();
    v_row RECORD;
    v_c INTEGER;
    v_k INTEGER;
    v_i INTEGER;
    v_seq BIGINT;
    v_hash BYTEA;
    v_round INTEGER := 0;
    v_rounds INTEGER := 0;
    -- The chains, in locking order, and their heads once locked.
    c_instance TEXT[] := '{}';
    c_chain TEXT[] := '{}';
    c_seq BIGINT[];
    c_hash BYTEA[];
    -- The rows in chain order: position in the arguments, chain, round (the k-th row of a
    -- chain moves its head in round k), and what is computed once the heads are locked.
    r_arg INTEGER[] := '{}';
    r_chain INTEGER[] := '{}';
    r_round INTEGER[] := '{}';
    r_instance TEXT[] := '{}';
    r_chain_name TEXT[] := '{}';
    r_device TEXT[] := '{}';
    r_token BIGINT[] := '{}';
    r_client TEXT[] := '{}';
    r_details TEXT[] := '{}';
    r_seq BIGINT[] := '{}';
    r_prev BYTEA[] := '{}';
    r_hash BYTEA[] := '{}';
BEGIN
    IF coalesce(cardinality(p_devices), 0) <> v_count
       OR coalesce(cardinality(p_token_serials), 0) <> v_count
       OR coalesce(cardinality(p_clients), 0) <> v_count
       OR coalesce(cardinality(p_details), 0) <> v_count THEN
        RAISE EXCEPTION 'audit_append_batch: one element per row expected in every array';
    END IF;
    IF v_count = 0 THEN
        RETURN 0;
    END IF;

    -- Rows by (instance id, chain) in bytes, and in the order given within a chain.
    FOR v_row IN
        SELECT s.i, p_instances[s.i] AS instance_id, coalesce(p_devices[s.i], '') AS chain
          FROM generate_subscripts(p_instances, 1) AS s(i)
         ORDER BY p_instances[s.i] COLLATE "C", coalesce(p_devices[s.i], '') COLLATE "C", s.i
    LOOP
        v_c := cardinality(c_chain);
        IF v_c = 0 OR c_instance[v_c] <> v_row.instance_id OR c_chain[v_c] <> v_row.chain THEN
            c_instance := c_instance || v_row.instance_id;
            c_chain := c_chain || v_row.chain;
            v_round := 0;
        END IF;
        v_round := v_round + 1;
        v_rounds := greatest(v_rounds, v_round);
        r_arg := r_arg || v_row.i;
        r_chain := r_chain || cardinality(c_chain);
        r_round := r_round || v_round;
    END LOOP;

    -- The heads, locked in that order until the transaction ends (audit_append() and every
    -- batch lock them so), each made at seq 0 the first time.
    c_seq := array_fill(NULL::bigint, ARRAY[cardinality(c_chain)]);
    c_hash := array_fill(NULL::bytea, ARRAY[cardinality(c_chain)]);
    FOR v_row IN
        SELECT c.n, h.seq, h.hash
          FROM unnest(c_instance, c_chain) WITH ORDINALITY AS c(instance_id, chain, n)
          JOIN audit_heads h ON h.instance_id = c.instance_id
                            AND h.chain = c.chain COLLATE "C"
         ORDER BY c.n
           FOR UPDATE OF h
    LOOP
        c_seq[v_row.n] := v_row.seq;
        c_hash[v_row.n] := v_row.hash;
    END LOOP;
    FOR v_c IN 1 .. cardinality(c_chain) LOOP
        CONTINUE WHEN c_seq[v_c] IS NOT NULL;
        INSERT INTO audit_heads (instance_id, chain, seq, hash)
        VALUES (c_instance[v_c], c_chain[v_c], 0, zero_hash)
        ON CONFLICT (instance_id, chain) DO NOTHING;
        SELECT h.seq, h.hash INTO STRICT v_seq, v_hash
          FROM audit_heads h
         WHERE h.instance_id = c_instance[v_c]
           AND h.chain = c_chain[v_c]
           FOR UPDATE;
        c_seq[v_c] := v_seq;
        c_hash[v_c] := v_hash;
    END LOOP;

    -- Each row chained to the one before it in its chain, hashed as audit_append() hashes it.
    FOR v_k IN 1 .. cardinality(r_arg) LOOP
        v_i := r_arg[v_k];
        v_c := r_chain[v_k];
        v_seq := c_seq[v_c] + 1;
        v_hash := audit_hash(c_instance[v_c], v_seq, v_time, p_event, p_devices[v_i],
                             p_token_serials[v_i], p_clients[v_i],
                             coalesce(p_details[v_i], '{}'), c_hash[v_c]);
        r_instance := r_instance || c_instance[v_c];
        r_chain_name := r_chain_name || c_chain[v_c];
        r_device := r_device || p_devices[v_i];
        r_token := r_token || p_token_serials[v_i];
        r_client := r_client || p_clients[v_i];
        r_details := r_details || coalesce(p_details[v_i], '{}');
        r_seq := r_seq || v_seq;
        r_prev := r_prev || c_hash[v_c];
        r_hash := r_hash || v_hash;
        c_seq[v_c] := v_seq;
        c_hash[v_c] := v_hash;
    END LOOP;
    INSERT INTO audit_log (instance_id, chain, seq, time, event, device_id, token_serial,
                           client, details, prev_hash, hash)
    SELECT r.instance_id, r.chain, r.seq, v_time, p_event, r.device_id, r.token_serial,
           r.client, r.details, r.prev_hash, r.hash
      FROM unnest(r_instance, r_chain_name, r_seq, r_device, r_token, r_client, r_details,
                  r_prev, r_hash)
           WITH ORDINALITY AS r(instance_id, chain, seq, device_id, token_serial, client,
                                details, prev_hash, hash, n)
     ORDER BY r.n;
    -- A head moves one row at a time (audit_heads_forward()): one UPDATE per round.
    FOR v_round IN 1 .. v_rounds LOOP
        UPDATE audit_heads h
           SET seq = r.seq,
               hash = r.hash
          FROM unnest(r_instance, r_chain_name, r_seq, r_hash, r_round)
               AS r(instance_id, chain, seq, hash, round)
         WHERE r.round = v_round
           AND h.instance_id = r.instance_id
           AND h.chain = r.chain COLLATE "C";
    END LOOP;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION audit_append_batch(TEXT[], TEXT, TEXT[], BIGINT[], TEXT[], TEXT[]) IS
    'Appends one audit row per array element (event p_event; chain of device p_devices[i], or the instance''s own when NULL) inside the caller''s transaction, as audit_append() would one by one: heads locked in the order of (instance id, chain) until the transaction ends, rows of one chain in the order given; returns the number of rows';

CREATE FUNCTION otp_verify_batch(
    p_instances TEXT[],
    p_devices TEXT[],
    p_nows TIMESTAMPTZ[],
    p_kinds SMALLINT[],
    p_amounts TEXT[],
    p_matches TEXT[],
    p_offsets TEXT[],
    p_range_lo BIGINT[],
    p_range_hi BIGINT[],
    p_references TEXT[],
    p_clients TEXT[],
    p_token_serials BIGINT[],
    p_max_failures INTEGER[],
    p_daily_failures INTEGER[],
    p_lookaheads INTEGER[]
) RETURNS TABLE (
    ord INTEGER,
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
    v_count_all INTEGER := coalesce(cardinality(p_devices), 0);
    -- The attempt being decided (a row of the arguments).
    att RECORD;
    v_instance BIGINT;
    -- The instance id last looked up, and its serial (NULL: no such instance).
    v_known_instance_id TEXT;
    v_known_instance BIGINT;
    v_state otp_verify_state%ROWTYPE;
    v_today DATE;
    v_step BIGINT;
    v_count INTEGER;
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
    -- Accepted values to prune: per success, its device, kind and the bound below which go.
    prune_instance BIGINT[] := '{}';
    prune_device TEXT[] := '{}';
    prune_kind SMALLINT[] := '{}';
    prune_below BIGINT[] := '{}';
    -- The history rows, written after the last decision.
    h_instance BIGINT[] := '{}';
    h_device TEXT[] := '{}';
    h_time TIMESTAMPTZ[] := '{}';
    h_outcome TEXT[] := '{}';
    h_reference TEXT[] := '{}';
    h_ctr BIGINT[] := '{}';
    h_offset INTEGER[] := '{}';
    h_client TEXT[] := '{}';
    h_token BIGINT[] := '{}';
    -- The audit rows' instances and details, likewise (their chains and actors are the
    -- history rows').
    a_instance TEXT[] := '{}';
    a_details TEXT[] := '{}';
BEGIN
    IF coalesce(cardinality(p_instances), 0) <> v_count_all
       OR coalesce(cardinality(p_nows), 0) <> v_count_all
       OR coalesce(cardinality(p_kinds), 0) <> v_count_all
       OR coalesce(cardinality(p_amounts), 0) <> v_count_all
       OR coalesce(cardinality(p_matches), 0) <> v_count_all
       OR coalesce(cardinality(p_offsets), 0) <> v_count_all
       OR coalesce(cardinality(p_range_lo), 0) <> v_count_all
       OR coalesce(cardinality(p_range_hi), 0) <> v_count_all
       OR coalesce(cardinality(p_references), 0) <> v_count_all
       OR coalesce(cardinality(p_clients), 0) <> v_count_all
       OR coalesce(cardinality(p_token_serials), 0) <> v_count_all
       OR coalesce(cardinality(p_max_failures), 0) <> v_count_all
       OR coalesce(cardinality(p_daily_failures), 0) <> v_count_all
       OR coalesce(cardinality(p_lookaheads), 0) <> v_count_all THEN
        RAISE EXCEPTION 'otp_verify_batch: one element per attempt expected in every array';
    END IF;

    -- Attempts by (instance id, device id, position): every batch takes the devices' locks in
    -- the same order (no two batches deadlock), and a device's attempts are adjacent.
    FOR att IN
        SELECT a.i, a.instance_id, a.device_id, a.at, a.kind, a.amount,
               a.matches::bigint[] AS matches, a.offsets::integer[] AS offsets, a.range_lo,
               a.range_hi, a.reference, a.client, a.token_serial, a.max_failures,
               a.daily_failures, a.lookahead
          FROM unnest(p_instances, p_devices, p_nows, p_kinds, p_amounts, p_matches, p_offsets,
                      p_range_lo, p_range_hi, p_references, p_clients, p_token_serials,
                      p_max_failures, p_daily_failures, p_lookaheads)
               WITH ORDINALITY AS a(instance_id, device_id, at, kind, amount, matches, offsets,
                                    range_lo, range_hi, reference, client, token_serial,
                                    max_failures, daily_failures, lookahead, i)
         ORDER BY a.instance_id COLLATE "C", a.device_id COLLATE "C", a.i
    LOOP
        v_today := (att.at AT TIME ZONE 'UTC')::date;
        v_step := floor(extract(epoch FROM att.at) / 30)::bigint;
        v_count := coalesce(cardinality(att.matches), 0);
        v_outcome := NULL;
        v_otp_ctr := NULL;
        v_offset := NULL;
        v_reference := NULL;
        v_locked_until := NULL;
        ord := att.i;
        outcome := NULL;
        retry_after_s := NULL;
        matched_ctr := NULL;
        matched_offset := NULL;
        replay_reference := NULL;
        stored_ctr := NULL;
        locked := FALSE;

        IF att.kind IS NULL OR att.kind NOT IN (1, 2)
           OR (att.kind = 1 AND coalesce(cardinality(att.offsets), 0) <> v_count)
           OR att.max_failures < 1 OR att.daily_failures < 1 OR att.lookahead < 0 THEN
            IF att.kind IS NULL OR att.kind NOT IN (1, 2) THEN
                RAISE EXCEPTION 'otp_verify: kind must be 1 (TOTP) or 2 (HOTP), not %', att.kind;
            ELSIF att.kind = 1 AND coalesce(cardinality(att.offsets), 0) <> v_count THEN
                RAISE EXCEPTION 'otp_verify: one offset per TOTP step expected';
            END IF;
            RAISE EXCEPTION 'otp_verify: limits must be positive and the look-ahead not negative';
        END IF;

        -- The instance, looked up once per run of its attempts (they are adjacent). Nothing
        -- locks it: its devices' locks below are what keeps them, and an instance deleted
        -- meanwhile takes its devices with it.
        IF v_known_instance_id IS DISTINCT FROM att.instance_id THEN
            v_known_instance_id := att.instance_id;
            v_known_instance := NULL;
            SELECT i.instance_serial INTO v_known_instance
              FROM instances i
             WHERE i.instance_id = att.instance_id;
        END IF;
        -- The device, by whole keys. A key-share lock keeps it from being deleted until we
        -- commit; an HOTP attempt locks the row against updates too, so that the counter read
        -- here is the one the decision commits against.
        IF att.kind = 2 THEN
            SELECT d.instance_serial, d.otp_ctr INTO v_instance, v_ctr
              FROM otp_devices d
             WHERE d.instance_serial = v_known_instance
               AND d.otp_device_id = att.device_id
               FOR NO KEY UPDATE;
        ELSE
            SELECT d.instance_serial INTO v_instance
              FROM otp_devices d
             WHERE d.instance_serial = v_known_instance
               AND d.otp_device_id = att.device_id
               FOR KEY SHARE;
        END IF;
        IF NOT FOUND THEN
            outcome := 'no_device';
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- The device's verification lock: one attempt at a time decides. Its row is made by
        -- the device's first attempt.
        SELECT * INTO v_state
          FROM otp_verify_state s
         WHERE s.instance_serial = v_instance
           AND s.otp_device_id = att.device_id
           FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO otp_verify_state (instance_serial, otp_device_id)
            VALUES (v_instance, att.device_id)
            ON CONFLICT (instance_serial, otp_device_id) DO NOTHING;
            SELECT * INTO STRICT v_state
              FROM otp_verify_state s
             WHERE s.instance_serial = v_instance
               AND s.otp_device_id = att.device_id
               FOR UPDATE;
        END IF;

        -- Refusals: logged, not counted.
        IF v_state.day = v_today AND v_state.day_failures >= att.daily_failures THEN
            v_outcome := 'daily_limit';
            retry_after_s := ceil(extract(epoch FROM
                ((v_today + 1)::timestamp AT TIME ZONE 'UTC') - att.at))::integer;
        ELSIF v_state.locked_until > att.at THEN
            v_outcome := 'locked';
            retry_after_s := ceil(extract(epoch FROM v_state.locked_until - att.at))::integer;
        END IF;

        IF v_outcome IS NULL AND att.kind = 1 THEN
            -- TOTP: the nearest matching step not accepted before wins.
            FOR v_idx IN 1 .. v_count LOOP
                v_value := att.matches[v_idx];
                INSERT INTO otp_verify_accepted AS a
                       (instance_serial, otp_device_id, kind, value, amount, reference,
                        accepted_at)
                VALUES (v_instance, att.device_id, 1, v_value, att.amount, att.reference, att.at)
                ON CONFLICT (instance_serial, otp_device_id, kind, value, amount) DO NOTHING;
                GET DIAGNOSTICS v_inserted = ROW_COUNT;
                IF v_inserted > 0 THEN
                    v_outcome := 'verified';
                    v_offset := att.offsets[v_idx];
                    -- Accepted steps no window can reach any more go at the end of the batch
                    -- (the table grows only here).
                    prune_instance := prune_instance || v_instance;
                    prune_device := prune_device || att.device_id;
                    prune_kind := prune_kind || 1::smallint;
                    prune_below := prune_below || (v_step - totp_keep);
                    EXIT;
                ELSIF v_outcome IS NULL THEN
                    v_outcome := 'replayed';
                    v_offset := att.offsets[v_idx];
                    SELECT a.reference INTO v_reference
                      FROM otp_verify_accepted a
                     WHERE a.instance_serial = v_instance
                       AND a.otp_device_id = att.device_id
                       AND a.kind = 1
                       AND a.value = v_value
                       AND a.amount = att.amount;
                END IF;
            END LOOP;
            IF v_outcome = 'verified' THEN
                v_reference := NULL;
            END IF;
        ELSIF v_outcome IS NULL AND att.kind = 2 THEN
            -- HOTP: decided against the counter read under the device's row lock.
            v_hi := CASE WHEN v_ctr > max_bigint - att.lookahead THEN max_bigint
                         ELSE v_ctr + att.lookahead END;
            -- The smallest match in [S, S + L], when the server computed every
            -- counter from S on (else a smaller match might be unknown).
            IF att.range_lo <= v_ctr THEN
                FOR v_idx IN 1 .. v_count LOOP
                    v_value := att.matches[v_idx];
                    CONTINUE WHEN v_value < v_ctr OR v_value > v_hi;
                    INSERT INTO otp_verify_accepted AS a
                           (instance_serial, otp_device_id, kind, value, amount, reference,
                            accepted_at)
                    VALUES (v_instance, att.device_id, 2, v_value, '', att.reference, att.at)
                    ON CONFLICT (instance_serial, otp_device_id, kind, value, amount) DO NOTHING;
                    GET DIAGNOSTICS v_inserted = ROW_COUNT;
                    IF v_inserted > 0 THEN
                        UPDATE otp_devices d
                           SET otp_ctr = GREATEST(d.otp_ctr,
                                   CASE WHEN v_value = max_bigint THEN max_bigint
                                        ELSE v_value + 1 END),
                               updated_at = now()
                         WHERE d.instance_serial = v_instance
                           AND d.otp_device_id = att.device_id;
                        v_outcome := 'verified';
                        v_otp_ctr := v_value;
                        v_reference := NULL;
                        -- Accepted counters far below the stored one go at the end of the
                        -- batch (at least the last look-ahead + 10 are kept; the table grows
                        -- only here).
                        prune_instance := prune_instance || v_instance;
                        prune_device := prune_device || att.device_id;
                        prune_kind := prune_kind || 2::smallint;
                        prune_below := prune_below || (v_ctr - att.lookahead - 10);
                        EXIT;
                    ELSIF v_outcome IS NULL THEN
                        -- Accepted before, and the counter was set back since.
                        v_outcome := 'replayed';
                        v_otp_ctr := v_value;
                        SELECT a.reference INTO v_reference
                          FROM otp_verify_accepted a
                         WHERE a.instance_serial = v_instance
                           AND a.otp_device_id = att.device_id
                           AND a.kind = 2
                           AND a.value = v_value
                           AND a.amount = '';
                    END IF;
                END LOOP;
            END IF;
            -- A match below S: replayed if it was accepted, skipped otherwise.
            IF v_outcome IS NULL THEN
                FOR v_idx IN 1 .. v_count LOOP
                    v_value := att.matches[v_idx];
                    CONTINUE WHEN v_value >= v_ctr;
                    SELECT a.reference INTO v_reference
                      FROM otp_verify_accepted a
                     WHERE a.instance_serial = v_instance
                       AND a.otp_device_id = att.device_id
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
            -- The server's codes do not cover [S, S + L]: it computes again (nothing is
            -- recorded; the device's locks are kept to the end of the batch).
            IF v_outcome IS NULL AND (att.range_lo > v_ctr OR att.range_hi < v_hi) THEN
                outcome := 'stale';
                stored_ctr := v_ctr;
                RETURN NEXT;
                CONTINUE;
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
            v_state.consecutive_failures :=
                least(v_state.consecutive_failures, max_integer - 1) + 1;
            IF v_state.consecutive_failures >= att.max_failures THEN
                IF v_state.lock_count = 0 THEN
                    v_state.locked_until := to_timestamp((v_step + 1) * 30);
                ELSE
                    v_state.locked_until := att.at + make_interval(
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
               AND s.otp_device_id = att.device_id;
            -- A mismatch that leaves the device locked is the one that locked it (attempts
            -- during a lock are refused as locked before they are compared).
            IF v_state.locked_until > att.at THEN
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
               AND s.otp_device_id = att.device_id;
        END IF;

        -- The history row, written with the others after the loop.
        h_instance := h_instance || v_instance;
        h_device := h_device || att.device_id;
        h_time := h_time || att.at;
        h_outcome := h_outcome || v_outcome;
        h_reference := h_reference || att.reference;
        h_ctr := h_ctr || v_otp_ctr;
        h_offset := h_offset || v_offset;
        h_client := h_client || att.client;
        h_token := h_token || att.token_serial;

        -- The audit row of the device's chain, appended after the loop.
        a_instance := a_instance || att.instance_id;
        a_details := a_details || jsonb_strip_nulls(jsonb_build_object(
            'outcome', v_outcome,
            'reference', att.reference,
            'otp_ctr', v_otp_ctr,
            'matched_offset', v_offset,
            'locked_until', floor(extract(epoch FROM v_locked_until))::bigint))::text;

        outcome := v_outcome;
        matched_ctr := v_otp_ctr;
        matched_offset := v_offset;
        replay_reference := v_reference;
        RETURN NEXT;
    END LOOP;

    IF cardinality(h_device) = 0 THEN
        RETURN;
    END IF;

    -- Accepted values no attempt can be accepted or replayed against any more.
    IF cardinality(prune_device) > 0 THEN
        DELETE FROM otp_verify_accepted a
         USING unnest(prune_instance, prune_device, prune_kind, prune_below)
               AS p(instance_serial, otp_device_id, kind, below)
         WHERE a.instance_serial = p.instance_serial
           AND a.otp_device_id = p.otp_device_id
           AND a.kind = p.kind
           AND a.value < p.below;
    END IF;

    -- The records, in the order the attempts were decided.
    INSERT INTO otp_verifications
           (instance_serial, otp_device_id, time, outcome, reference, otp_ctr,
            matched_offset, client, token_serial)
    SELECT h.instance_serial, h.otp_device_id, h.time, h.outcome, h.reference, h.otp_ctr,
           h.matched_offset, h.client, h.token_serial
      FROM unnest(h_instance, h_device, h_time, h_outcome, h_reference, h_ctr, h_offset,
                  h_client, h_token)
           WITH ORDINALITY AS h(instance_serial, otp_device_id, time, outcome, reference,
                                otp_ctr, matched_offset, client, token_serial, n)
     ORDER BY h.n;

    -- The audit rows, in the devices' chains, after the devices' own locks.
    PERFORM audit_append_batch(a_instance, 'verification', h_device, h_token, h_client,
                               a_details);
END
$$;

COMMENT ON FUNCTION otp_verify_batch(TEXT[], TEXT[], TIMESTAMPTZ[], SMALLINT[], TEXT[], TEXT[],
                                     TEXT[], BIGINT[], BIGINT[], TEXT[], TEXT[], BIGINT[],
                                     INTEGER[], INTEGER[], INTEGER[]) IS
    'Decides a batch of verification attempts (docs/api.md, verification; one element per attempt in each array, matches and offsets as array literals) in the order of instance id, device id and position, each under its device''s verification lock, records them in otp_verifications and appends them to their devices'' audit chains; ord: the attempt''s position in the arrays (1-based); locked: whether its mismatch locked the device';

-- The guard that a chain's head moves only one row forward, to the row appended after it
-- (migration 0010's audit_head_forward(), a BEFORE UPDATE trigger per row), checks each UPDATE
-- statement as a whole instead, from its transition tables: a batch moves all of its heads in
-- one statement, and a trigger call per row (a PL/pgSQL call with its settings and a query) was
-- about a twelfth of a batch's time in the database. Same rule, same error, raised before the
-- statement's transaction can commit.
DROP TRIGGER audit_heads_forward_only ON audit_heads;
DROP FUNCTION audit_head_forward();

CREATE FUNCTION audit_heads_forward() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    SET enable_seqscan = off
    SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- Every new head names the row of its chain at its seq, and that row follows the old head
    -- of the same chain (keys are unique on both sides): one index lookup per head moved.
    IF EXISTS (SELECT 1
                 FROM audit_heads_new n
                WHERE NOT EXISTS (SELECT 1
                                    FROM audit_log l
                                   WHERE l.instance_id = n.instance_id
                                     AND l.chain = n.chain
                                     AND l.seq = n.seq
                                     AND l.hash = n.hash
                                     AND EXISTS (SELECT 1
                                                   FROM audit_heads_old o
                                                  WHERE o.instance_id = n.instance_id
                                                    AND o.chain = n.chain
                                                    AND o.seq + 1 = n.seq
                                                    AND o.hash = l.prev_hash))) THEN
        RAISE EXCEPTION 'an audit chain head moves only to the row appended after it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION audit_heads_forward() IS
    'Trigger function (per UPDATE statement of audit_heads): refuses unless every head updated moved one row forward, to the audit_log row whose prev_hash is its previous hash';

CREATE TRIGGER audit_heads_forward_only
    AFTER UPDATE ON audit_heads
    REFERENCING OLD TABLE AS audit_heads_old NEW TABLE AS audit_heads_new
    FOR EACH STATEMENT EXECUTE FUNCTION audit_heads_forward();

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
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    SELECT v.outcome, v.retry_after_s, v.matched_ctr, v.matched_offset, v.replay_reference,
           v.stored_ctr, v.locked
      FROM otp_verify_batch(ARRAY[p_instance], ARRAY[p_device], ARRAY[p_now], ARRAY[p_kind],
                            ARRAY[p_amount], ARRAY[p_matches::text], ARRAY[p_offsets::text],
                            ARRAY[p_range_lo], ARRAY[p_range_hi], ARRAY[p_reference],
                            ARRAY[p_client], ARRAY[p_token_serial], ARRAY[p_max_failures],
                            ARRAY[p_daily_failures], ARRAY[p_lookahead]) v
$$;

COMMENT ON FUNCTION otp_verify_observed(TEXT, TEXT, TIMESTAMPTZ, SMALLINT, TEXT, BIGINT[],
                                        INTEGER[], BIGINT, BIGINT, TEXT, TEXT, BIGINT, INTEGER,
                                        INTEGER, INTEGER) IS
    'otp_verify_batch() for one attempt: decides it, records it in otp_verifications and appends it to the device''s audit chain; locked: whether this attempt''s mismatch locked the device';
