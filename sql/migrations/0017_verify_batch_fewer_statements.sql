-- Fewer statements per verification in a batch (issue 10's latency goal).
--
-- Measured beside migration 0016 by calling both versions of otp_verify_batch() alternately on
-- one database (contrib/verify-bench/function-bench.sh: pgbench, two clients, batches of 16
-- correct HOTP codes): this version decides about 10 % more attempts per second, and dropping
-- the accepted values' CHECKs about 5 % more. What changes:
--
--   * otp_verify_batch() keeps the decisions of a batch in one array of otp_verify_decision
--     (one append per attempt) instead of eleven arrays (eleven appends), builds the audit
--     rows' details set-wise from it after the last decision rather than one by one, and uses
--     its output columns as the decision's working variables. Every PL/pgSQL statement is an
--     expression evaluated on its own; an attempt used to run about sixty of them.
--   * An HOTP success no longer updates its device's counter at once: the advances of the
--     whole batch are written by one UPDATE after the last decision. The device's row is
--     locked (FOR NO KEY UPDATE) from the attempt on, as before, so nothing else can read or
--     move the counter in between, and a later attempt on the same device in the same batch
--     (attempts of a device are adjacent) is decided against the advanced counter, kept in
--     the function. The counter's CHECK and the notification trigger's WHEN clause, which
--     PostgreSQL reads back from their stored form at each statement, are now read once per
--     batch.
--   * An HOTP success prunes its device's old accepted counters only when the counter enters
--     a new block of 8 (at most one success in 8 does, and at least one in every 8 counter
--     values), so a device keeps at most look-ahead + 18 accepted counters instead of
--     look-ahead + 10. An attempt can only meet a counter below the stored one when the
--     counter moved while the server computed its codes; such a counter, still kept, is
--     answered `replayed` (it was accepted) instead of `mismatch`. TOTP steps are pruned at
--     each success, as before.
--   * otp_verify_accepted loses its two CHECKs (kind 1 or 2, value not negative): every row is
--     written by otp_verify_batch(), which refuses both before writing (the same errors for
--     the kind; a negative step or counter is refused with its own message), and PostgreSQL
--     read both expressions back at each insert, once per attempt.
--   * An HOTP attempt whose codes do not cover [S, S + L] (S the stored counter, L the
--     look-ahead) is answered `stale` when it would be `replayed`, as it already was when it
--     would be a mismatch: the server now computes codes from its cached counter up to the
--     first match only (one or two codes for a correct code instead of 2 L + 11), sending
--     that range, and a replay found in it does not prove that no later counter matches. The
--     server computes the whole range again, as for any stale answer; a server that sends the
--     whole range (the previous binary) is answered as before.
--   * audit_append_batch() computes the rows' order, chains and rounds in one query instead of
--     a loop, and the loop that hashes the rows keeps three arrays instead of nine. Same rows,
--     same hashes, same locks in the same order.
--
-- Same signatures and results: the previous binary calls these functions as before.

ALTER TABLE otp_verify_accepted
    DROP CONSTRAINT otp_verify_accepted_kind_check,
    DROP CONSTRAINT otp_verify_accepted_value_check;

COMMENT ON COLUMN otp_verify_accepted.kind IS
    '1: value is a TOTP step (seconds since the epoch / 30); 2: value is an HOTP counter (otp_verify_batch(), the only writer, refuses any other kind and a negative value)';

CREATE TYPE otp_verify_decision AS (
    instance_id TEXT,
    instance_serial BIGINT,
    otp_device_id TEXT,
    time TIMESTAMPTZ,
    outcome TEXT,
    reference TEXT,
    otp_ctr BIGINT,
    matched_offset INTEGER,
    client TEXT,
    token_serial BIGINT,
    locked_until TIMESTAMPTZ,
    prune_kind SMALLINT,
    prune_below BIGINT,
    new_ctr BIGINT
);

COMMENT ON TYPE otp_verify_decision IS
    'An attempt decided by otp_verify_batch(): what its history row, its audit row, the pruning of accepted values and the counter advance are made of, written for the whole batch after the last decision';

CREATE OR REPLACE FUNCTION otp_verify_batch(
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
    v_ctr BIGINT;
    v_hi BIGINT;
    v_idx INTEGER;
    v_value BIGINT;
    v_inserted INTEGER;
    v_locked_until TIMESTAMPTZ;
    v_prune_kind SMALLINT;
    v_prune_below BIGINT;
    v_new_ctr BIGINT;
    -- The HOTP device whose counter an earlier attempt of this batch advanced, and to what:
    -- the advance is written once, after the last decision, and a later attempt on the same
    -- device (they are adjacent) is decided against it.
    v_adv_instance BIGINT;
    v_adv_device TEXT;
    v_adv_ctr BIGINT;
    -- The attempts decided, for the writes after the last decision.
    v_decided otp_verify_decision[] := '{}';
    -- The audit rows' arguments.
    a_instances TEXT[];
    a_devices TEXT[];
    a_tokens BIGINT[];
    a_clients TEXT[];
    a_details TEXT[];
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
        -- The outputs double as the decision's working variables.
        ord := att.i;
        outcome := NULL;
        retry_after_s := NULL;
        matched_ctr := NULL;
        matched_offset := NULL;
        replay_reference := NULL;
        stored_ctr := NULL;
        locked := FALSE;
        v_locked_until := NULL;
        v_prune_kind := NULL;
        v_new_ctr := NULL;

        -- Accepted values are never negative: a value below 0 is refused here (the table has
        -- no CHECK of its own; this function is its only writer).
        IF att.kind IS NULL OR att.kind NOT IN (1, 2)
           OR (att.kind = 1 AND coalesce(cardinality(att.offsets), 0)
                                <> coalesce(cardinality(att.matches), 0))
           OR att.max_failures < 1 OR att.daily_failures < 1 OR att.lookahead < 0
           OR 0 > ANY (att.matches) THEN
            IF att.kind IS NULL OR att.kind NOT IN (1, 2) THEN
                RAISE EXCEPTION 'otp_verify: kind must be 1 (TOTP) or 2 (HOTP), not %', att.kind;
            ELSIF att.kind = 1 AND coalesce(cardinality(att.offsets), 0)
                                   <> coalesce(cardinality(att.matches), 0) THEN
                RAISE EXCEPTION 'otp_verify: one offset per TOTP step expected';
            ELSIF 0 > ANY (att.matches) THEN
                RAISE EXCEPTION 'otp_verify: steps and counters are not negative';
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
            IF v_adv_device = att.device_id AND v_adv_instance = v_instance THEN
                v_ctr := greatest(v_ctr, v_adv_ctr);
            END IF;
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
        v_today := (att.at AT TIME ZONE 'UTC')::date;
        IF v_state.day = v_today AND v_state.day_failures >= att.daily_failures THEN
            outcome := 'daily_limit';
            retry_after_s := ceil(extract(epoch FROM
                ((v_today + 1)::timestamp AT TIME ZONE 'UTC') - att.at))::integer;
        ELSIF v_state.locked_until > att.at THEN
            outcome := 'locked';
            retry_after_s := ceil(extract(epoch FROM v_state.locked_until - att.at))::integer;
        ELSIF att.kind = 1 THEN
            -- TOTP: the nearest matching step not accepted before wins.
            FOR v_idx IN 1 .. coalesce(cardinality(att.matches), 0) LOOP
                v_value := att.matches[v_idx];
                INSERT INTO otp_verify_accepted AS a
                       (instance_serial, otp_device_id, kind, value, amount, reference,
                        accepted_at)
                VALUES (v_instance, att.device_id, 1, v_value, att.amount, att.reference, att.at)
                ON CONFLICT (instance_serial, otp_device_id, kind, value, amount) DO NOTHING;
                GET DIAGNOSTICS v_inserted = ROW_COUNT;
                IF v_inserted > 0 THEN
                    outcome := 'verified';
                    matched_offset := att.offsets[v_idx];
                    replay_reference := NULL;
                    -- Accepted steps no window can reach any more go at the end of the batch
                    -- (the table grows only here).
                    v_prune_kind := 1;
                    v_prune_below := floor(extract(epoch FROM att.at) / 30)::bigint - totp_keep;
                    EXIT;
                ELSIF outcome IS NULL THEN
                    outcome := 'replayed';
                    matched_offset := att.offsets[v_idx];
                    SELECT a.reference INTO replay_reference
                      FROM otp_verify_accepted a
                     WHERE a.instance_serial = v_instance
                       AND a.otp_device_id = att.device_id
                       AND a.kind = 1
                       AND a.value = v_value
                       AND a.amount = att.amount;
                END IF;
            END LOOP;
        ELSE
            -- HOTP: decided against the counter read under the device's row lock.
            v_hi := CASE WHEN v_ctr > max_bigint - att.lookahead THEN max_bigint
                         ELSE v_ctr + att.lookahead END;
            -- The smallest match in [S, S + L], when the server computed every
            -- counter from S on (else a smaller match might be unknown).
            IF att.range_lo <= v_ctr THEN
                FOR v_idx IN 1 .. coalesce(cardinality(att.matches), 0) LOOP
                    v_value := att.matches[v_idx];
                    CONTINUE WHEN v_value < v_ctr OR v_value > v_hi;
                    INSERT INTO otp_verify_accepted AS a
                           (instance_serial, otp_device_id, kind, value, amount, reference,
                            accepted_at)
                    VALUES (v_instance, att.device_id, 2, v_value, '', att.reference, att.at)
                    ON CONFLICT (instance_serial, otp_device_id, kind, value, amount) DO NOTHING;
                    GET DIAGNOSTICS v_inserted = ROW_COUNT;
                    IF v_inserted > 0 THEN
                        -- The counter moves past the match, written after the last decision.
                        v_new_ctr := CASE WHEN v_value = max_bigint THEN max_bigint
                                          ELSE v_value + 1 END;
                        v_adv_instance := v_instance;
                        v_adv_device := att.device_id;
                        v_adv_ctr := greatest(v_ctr, v_new_ctr);
                        outcome := 'verified';
                        matched_ctr := v_value;
                        replay_reference := NULL;
                        -- Accepted counters far below the stored one go at the end of the
                        -- batch (at least the last look-ahead + 10 are kept; the table grows
                        -- only here), each time the counter enters a new block of 8: at most
                        -- one success in 8 prunes, and a device keeps at most look-ahead + 18.
                        IF v_new_ctr / 8 > v_ctr / 8 THEN
                            v_prune_kind := 2;
                            v_prune_below := v_ctr - att.lookahead - 10;
                        END IF;
                        EXIT;
                    ELSIF outcome IS NULL THEN
                        -- Accepted before, and the counter was set back since.
                        outcome := 'replayed';
                        matched_ctr := v_value;
                        SELECT a.reference INTO replay_reference
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
            IF outcome IS NULL THEN
                FOR v_idx IN 1 .. coalesce(cardinality(att.matches), 0) LOOP
                    v_value := att.matches[v_idx];
                    CONTINUE WHEN v_value >= v_ctr;
                    SELECT a.reference INTO replay_reference
                      FROM otp_verify_accepted a
                     WHERE a.instance_serial = v_instance
                       AND a.otp_device_id = att.device_id
                       AND a.kind = 2
                       AND a.value = v_value
                       AND a.amount = '';
                    IF FOUND THEN
                        outcome := 'replayed';
                        matched_ctr := v_value;
                        EXIT;
                    END IF;
                END LOOP;
            END IF;
            -- The server's codes do not cover [S, S + L]: it computes again (nothing is
            -- recorded; the device's locks are kept to the end of the batch). A replay counts
            -- as undecided too: a server that stopped at its first match (from its counter on)
            -- did not look for a later one that might verify.
            IF (outcome IS NULL OR outcome = 'replayed')
               AND (att.range_lo > v_ctr OR att.range_hi < v_hi) THEN
                outcome := 'stale';
                stored_ctr := v_ctr;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;

        IF outcome IS NULL THEN
            -- Mismatch: counted; the F-th in a row and every later one locks.
            outcome := 'mismatch';
            IF v_state.day IS DISTINCT FROM v_today THEN
                v_state.day := v_today;
                v_state.day_failures := 0;
            END IF;
            v_state.day_failures := least(v_state.day_failures, max_integer - 1) + 1;
            v_state.consecutive_failures :=
                least(v_state.consecutive_failures, max_integer - 1) + 1;
            IF v_state.consecutive_failures >= att.max_failures THEN
                IF v_state.lock_count = 0 THEN
                    v_state.locked_until :=
                        to_timestamp((floor(extract(epoch FROM att.at) / 30)::bigint + 1) * 30);
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
        ELSIF outcome = 'verified'
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

        v_decided := v_decided || ROW(att.instance_id, v_instance, att.device_id, att.at, outcome,
                                      att.reference, matched_ctr, matched_offset, att.client,
                                      att.token_serial, v_locked_until, v_prune_kind,
                                      v_prune_below, v_new_ctr)::otp_verify_decision;
        RETURN NEXT;
    END LOOP;

    IF cardinality(v_decided) = 0 THEN
        RETURN;
    END IF;

    -- The counters HOTP successes moved (their rows are locked since their attempts).
    IF v_adv_device IS NOT NULL THEN
        UPDATE otp_devices d
           SET otp_ctr = GREATEST(d.otp_ctr, x.new_ctr),
               updated_at = now()
          FROM (SELECT c.instance_serial, c.otp_device_id, max(c.new_ctr) AS new_ctr
                  FROM unnest(v_decided) AS c
                 WHERE c.new_ctr IS NOT NULL
                 GROUP BY c.instance_serial, c.otp_device_id) AS x
         WHERE d.instance_serial = x.instance_serial
           AND d.otp_device_id = x.otp_device_id;
    END IF;

    -- Accepted values no attempt can be accepted or replayed against any more.
    DELETE FROM otp_verify_accepted a
     USING unnest(v_decided) AS p
     WHERE p.prune_kind IS NOT NULL
       AND a.instance_serial = p.instance_serial
       AND a.otp_device_id = p.otp_device_id
       AND a.kind = p.prune_kind
       AND a.value < p.prune_below;

    -- The records, in the order the attempts were decided.
    INSERT INTO otp_verifications
           (instance_serial, otp_device_id, time, outcome, reference, otp_ctr,
            matched_offset, client, token_serial)
    SELECT h.instance_serial, h.otp_device_id, h.time, h.outcome, h.reference, h.otp_ctr,
           h.matched_offset, h.client, h.token_serial
      FROM unnest(v_decided) WITH ORDINALITY AS h
     ORDER BY h.ordinality;

    -- The audit rows, in the devices' chains, after the devices' own locks.
    SELECT array_agg(h.instance_id ORDER BY h.ordinality),
           array_agg(h.otp_device_id ORDER BY h.ordinality),
           array_agg(h.token_serial ORDER BY h.ordinality),
           array_agg(h.client ORDER BY h.ordinality),
           array_agg(jsonb_strip_nulls(jsonb_build_object(
                         'outcome', h.outcome,
                         'reference', h.reference,
                         'otp_ctr', h.otp_ctr,
                         'matched_offset', h.matched_offset,
                         'locked_until', floor(extract(epoch FROM h.locked_until))::bigint))::text
                     ORDER BY h.ordinality)
      INTO a_instances, a_devices, a_tokens, a_clients, a_details
      FROM unnest(v_decided) WITH ORDINALITY AS h;
    PERFORM audit_append_batch(a_instances, 'verification', a_devices, a_tokens, a_clients,
                               a_details);
END
$$;

COMMENT ON FUNCTION otp_verify_batch(TEXT[], TEXT[], TIMESTAMPTZ[], SMALLINT[], TEXT[], TEXT[],
                                     TEXT[], BIGINT[], BIGINT[], TEXT[], TEXT[], BIGINT[],
                                     INTEGER[], INTEGER[], INTEGER[]) IS
    'Decides a batch of verification attempts (docs/api.md, verification; one element per attempt in each array, matches and offsets as array literals) in the order of instance id, device id and position, each under its device''s verification lock, then advances the HOTP counters, records the attempts in otp_verifications and appends them to their devices'' audit chains; ord: the attempt''s position in the arrays (1-based); locked: whether its mismatch locked the device';

CREATE OR REPLACE FUNCTION audit_append_batch(
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
    v_round INTEGER;
    v_rounds INTEGER;
    -- The chains, in locking order, and their heads once locked (then as the rows move them).
    c_instance TEXT[];
    c_chain TEXT[];
    c_seq BIGINT[];
    c_hash BYTEA[];
    -- The rows in chain order: position in the arguments, chain (index into c_*), round (the
    -- k-th row of a chain moves its head in round k), and what is computed once the heads are
    -- locked.
    r_arg INTEGER[];
    r_chain INTEGER[];
    r_round INTEGER[];
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

    -- Rows by (instance id, chain) in bytes, and in the order given within a chain: each
    -- row's chain number and round, and the chains in that order (one query).
    SELECT array_agg(x.i ORDER BY x.k), array_agg(x.c ORDER BY x.k),
           array_agg(x.round ORDER BY x.k), max(x.round),
           array_agg(x.instance_id ORDER BY x.k) FILTER (WHERE x.round = 1),
           array_agg(x.chain ORDER BY x.k) FILTER (WHERE x.round = 1)
      INTO r_arg, r_chain, r_round, v_rounds, c_instance, c_chain
      FROM (SELECT s.i, s.instance_id, s.chain,
                   row_number() OVER w AS k,
                   dense_rank() OVER w_chain AS c,
                   row_number() OVER (PARTITION BY s.instance_id, s.chain ORDER BY s.i) AS round
              FROM (SELECT g.i, p_instances[g.i] COLLATE "C" AS instance_id,
                           coalesce(p_devices[g.i], '') COLLATE "C" AS chain
                      FROM generate_subscripts(p_instances, 1) AS g(i)) AS s
            WINDOW w AS (ORDER BY s.instance_id, s.chain, s.i),
                   w_chain AS (ORDER BY s.instance_id, s.chain)) AS x;

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
        SELECT h.seq, h.hash INTO STRICT v_row
          FROM audit_heads h
         WHERE h.instance_id = c_instance[v_c]
           AND h.chain = c_chain[v_c]
           FOR UPDATE;
        c_seq[v_c] := v_row.seq;
        c_hash[v_c] := v_row.hash;
    END LOOP;

    -- Each row chained to the one before it in its chain, hashed as audit_append() hashes it.
    FOR v_k IN 1 .. v_count LOOP
        v_i := r_arg[v_k];
        v_c := r_chain[v_k];
        r_prev := r_prev || c_hash[v_c];
        c_seq[v_c] := c_seq[v_c] + 1;
        c_hash[v_c] := audit_hash(c_instance[v_c], c_seq[v_c], v_time, p_event, p_devices[v_i],
                                  p_token_serials[v_i], p_clients[v_i],
                                  coalesce(p_details[v_i], '{}'), c_hash[v_c]);
        r_seq := r_seq || c_seq[v_c];
        r_hash := r_hash || c_hash[v_c];
    END LOOP;
    INSERT INTO audit_log (instance_id, chain, seq, time, event, device_id, token_serial,
                           client, details, prev_hash, hash)
    SELECT c_instance[r.c], c_chain[r.c], r.seq, v_time, p_event, p_devices[r.i],
           p_token_serials[r.i], p_clients[r.i], coalesce(p_details[r.i], '{}'), r.prev_hash,
           r.hash
      FROM unnest(r_arg, r_chain, r_seq, r_prev, r_hash)
           WITH ORDINALITY AS r(i, c, seq, prev_hash, hash, n)
     ORDER BY r.n;
    -- A head moves one row at a time (audit_heads_forward()): one UPDATE per round.
    FOR v_round IN 1 .. v_rounds LOOP
        UPDATE audit_heads h
           SET seq = r.seq,
               hash = r.hash
          FROM unnest(r_chain, r_seq, r_hash, r_round) AS r(c, seq, hash, round)
         WHERE r.round = v_round
           AND h.instance_id = c_instance[r.c]
           AND h.chain = c_chain[r.c] COLLATE "C";
    END LOOP;
    RETURN v_count;
END
$$;
