-- A batch of HOTP confirmations in one function that finds each device by its whole key,
-- whatever the planner knows about otp_devices.
--
-- The batch statement it replaces joined the batch's (instance id, device id) pairs to
-- instances and otp_devices in one query. Before otp_devices was first analyzed, the planner
-- joined instances to otp_devices first, by instance_serial alone (the join's equivalence
-- class allows it), and filtered the device id afterwards: an index scan over every device
-- of the instance for every device of the batch. On an instance with 10,000 devices that was
-- about 1.5 ms per device and 12 to 25 ms per batch, until autovacuum's first ANALYZE
-- (contrib/loadtest.sh, scenarios (e) and (f), measured with EXPLAIN ANALYZE during the run).
-- Rewriting the lock as a sorted LATERAL lookup fixed the lock but not the UPDATE's join,
-- which chose the same prefix scan.
--
-- otp_confirm_batch() instead runs one UPDATE per device of the batch, by instance_serial and
-- otp_device_id (the primary key, both given), with the generic plans and enable_seqscan off
-- of the other hot functions (migration 0013). The UPDATEs run in the order of (instance id,
-- device id) byte by byte, so rows are locked in the same order as before and as the
-- verification batches lock them, and batches never deadlock. A device asked for N times in
-- the batch is taken N values at once; the values are audited (`confirmation_issued`), in the
-- order asked, by one audit_append_batch() call after the last UPDATE, in the same
-- transaction as before. Same rows and results as the statement it replaces.
-- Expand only: the previous binary keeps its own statement.

CREATE FUNCTION otp_confirm_batch(
    p_instances TEXT[],
    p_devices TEXT[],
    p_priced BOOLEAN[],
    p_token_serials BIGINT[],
    p_clients TEXT[]
) RETURNS TABLE (
    instance_id TEXT,
    otp_device_id TEXT,
    description TEXT,
    otp_key BYTEA,
    otp_key_encrypted BOOLEAN,
    otp_key_data_key BOOLEAN,
    data_key_wrapped BYTEA,
    otp_algorithm SMALLINT,
    otp_ctr BIGINT,
    created_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ
)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    SET enable_seqscan = off
    SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_count INTEGER := coalesce(cardinality(p_instances), 0);
    v_known TEXT;
    v_serial BIGINT;
    v_data_key BYTEA;
    w RECORD;
    k INTEGER;
    -- The audit rows, in the order they are appended.
    a_instances TEXT[] := '{}';
    a_devices TEXT[] := '{}';
    a_tokens BIGINT[] := '{}';
    a_clients TEXT[] := '{}';
    a_details TEXT[] := '{}';
BEGIN
    IF coalesce(cardinality(p_devices), 0) <> v_count
       OR coalesce(cardinality(p_priced), 0) <> v_count
       OR coalesce(cardinality(p_token_serials), 0) <> v_count
       OR coalesce(cardinality(p_clients), 0) <> v_count THEN
        RAISE EXCEPTION 'otp_confirm_batch: the arrays differ in length';
    END IF;

    FOR w IN
        SELECT r.instance_id AS instance_id,
               r.device_id AS device_id,
               count(*)::BIGINT AS n,
               bool_and(r.price_given) AS priced,
               array_agg(r.token_serial ORDER BY r.ord) AS tokens,
               array_agg(r.client ORDER BY r.ord) AS clients
          FROM unnest(p_instances, p_devices, p_priced, p_token_serials, p_clients)
               WITH ORDINALITY AS r(instance_id, device_id, price_given, token_serial, client, ord)
         GROUP BY r.instance_id, r.device_id
         ORDER BY r.instance_id COLLATE "C", r.device_id COLLATE "C"
    LOOP
        -- The instance, looked up once per run of its devices (they are adjacent).
        IF v_known IS DISTINCT FROM w.instance_id THEN
            v_known := w.instance_id;
            v_serial := NULL;
            v_data_key := NULL;
            SELECT i.instance_serial, i.data_key_wrapped INTO v_serial, v_data_key
              FROM instances i
             WHERE i.instance_id = w.instance_id;
        END IF;
        CONTINUE WHEN v_serial IS NULL;

        -- Only a counter-based device, with a price when its codes are bound to one, and only
        -- if every value asked for exists: otherwise nothing is taken and the caller asks why.
        UPDATE otp_devices AS d
           SET otp_ctr = d.otp_ctr + w.n,
               updated_at = now()
         WHERE d.instance_serial = v_serial
           AND d.otp_device_id = w.device_id
           AND (d.otp_algorithm = 3 OR (d.otp_algorithm = 4 AND w.priced))
           AND d.otp_ctr <= 9223372036854775807 - w.n
        RETURNING d.otp_device_id, d.description, d.otp_key, d.otp_key_encrypted,
                  d.otp_key_data_key, d.otp_algorithm, d.otp_ctr - w.n, d.created_at,
                  d.updated_at
             INTO otp_device_id, description, otp_key, otp_key_encrypted,
                  otp_key_data_key, otp_algorithm, otp_ctr, created_at,
                  updated_at;
        CONTINUE WHEN NOT FOUND;
        instance_id := w.instance_id;
        data_key_wrapped := v_data_key;
        FOR k IN 0 .. w.n - 1 LOOP
            a_instances := a_instances || w.instance_id;
            a_devices := a_devices || w.device_id;
            a_tokens := a_tokens || w.tokens[k + 1];
            a_clients := a_clients || w.clients[k + 1];
            a_details := a_details || jsonb_build_object('otp_ctr', otp_ctr + k)::TEXT;
        END LOOP;
        RETURN NEXT;
    END LOOP;

    IF cardinality(a_instances) > 0 THEN
        PERFORM audit_append_batch(a_instances, 'confirmation_issued', a_devices, a_tokens,
                                   a_clients, a_details);
    END IF;
    RETURN;
END
$$;

COMMENT ON FUNCTION otp_confirm_batch(TEXT[], TEXT[], BOOLEAN[], BIGINT[], TEXT[]) IS
    'Takes the next counter values of a batch of HOTP confirmations (one element per confirmation in each array: instance id, device id, price given, token serial, client): a device asked for N times is advanced by N in one UPDATE by its whole key, in the order of (instance id, device id) byte by byte, if it is counter-based, has a price when its algorithm needs one and has N values left; each value taken is audited as confirmation_issued in the order asked. Returns each device advanced, with otp_ctr the first value taken; a device not advanced is absent';
