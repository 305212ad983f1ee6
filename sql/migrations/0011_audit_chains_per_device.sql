-- Audit chains per device (docs/audit.md): one hash chain per instance and device, and one
-- per instance for the events of no device (tokens, logins), instead of one per instance.
--
-- With one chain per instance, every audited write of an instance waited for the previous
-- one's commit (the head's row lock is held to the commit): confirmations over many devices,
-- which otherwise only wait for their own device's row, ran about ten times slower. A device's
-- writes already take turns on its row, so a chain per device adds no wait.
--
-- `chain` is the device's id, or '' for the instance's own events; rows appended by 0010's
-- audit_append() form the '' chain and stay valid (a row's hash does not cover its chain: a
-- row moved to another chain breaks both). `serial` orders the rows of all chains of an
-- instance as they were appended, for listing. Chains sort byte by byte (COLLATE "C"), as the
-- check walks them.
-- Expand only: audit_append() keeps its signature; the previous binary's statements work.

ALTER TABLE audit_heads ADD COLUMN chain TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit_heads DROP CONSTRAINT audit_heads_pkey;
ALTER TABLE audit_heads ADD PRIMARY KEY (instance_id, chain);

ALTER TABLE audit_log ADD COLUMN chain TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN serial BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE audit_log ADD PRIMARY KEY (instance_id, chain, seq);
CREATE UNIQUE INDEX audit_log_by_serial ON audit_log (instance_id, serial);

COMMENT ON TABLE audit_heads IS
    'The head of each audit chain (one per instance and device, and the instance''s own, chain ''''): its last row; its row is the lock that serializes appends to the chain';
COMMENT ON COLUMN audit_heads.chain IS
    'The device the chain records, or '''' for the instance''s events of no device';
COMMENT ON COLUMN audit_heads.seq IS
    'Sequence number of the chain''s last row (0: none yet)';
COMMENT ON TABLE audit_log IS
    'Append-only audit trail, SHA-256 hash chains per instance and device (docs/audit.md); written only by audit_append()';
COMMENT ON COLUMN audit_log.chain IS
    'The chain of the row: its device''s id, or '''' for events of no device';
COMMENT ON COLUMN audit_log.seq IS
    'Position in its chain: 1, 2, 3, ... without gaps';
COMMENT ON COLUMN audit_log.serial IS
    'Order of appending across the chains (for listing; not hashed; may have gaps)';
COMMENT ON INDEX audit_log_by_serial IS
    'Lists an instance''s rows of all chains in the order they were appended';

CREATE OR REPLACE FUNCTION audit_append(
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
    v_chain TEXT := coalesce(p_device, '');
    v_seq BIGINT;
    v_prev BYTEA;
    v_time TIMESTAMPTZ := now();
    v_details TEXT := coalesce(p_details, '{}');
    v_hash BYTEA;
BEGIN
    -- The chain's head, locked until the caller's transaction ends.
    SELECT h.seq, h.hash INTO v_seq, v_prev
      FROM audit_heads h
     WHERE h.instance_id = p_instance
       AND h.chain = v_chain
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_heads (instance_id, chain, seq, hash)
        VALUES (p_instance, v_chain, 0, decode(repeat('00', 32), 'hex'))
        ON CONFLICT (instance_id, chain) DO NOTHING;
        SELECT h.seq, h.hash INTO STRICT v_seq, v_prev
          FROM audit_heads h
         WHERE h.instance_id = p_instance
           AND h.chain = v_chain
           FOR UPDATE;
    END IF;
    v_seq := v_seq + 1;
    v_hash := audit_hash(p_instance, v_seq, v_time, p_event, p_device, p_token_serial,
                         p_client, v_details, v_prev);
    INSERT INTO audit_log (instance_id, chain, seq, time, event, device_id, token_serial,
                           client, details, prev_hash, hash)
    VALUES (p_instance, v_chain, v_seq, v_time, p_event, p_device, p_token_serial, p_client,
            v_details, v_prev, v_hash);
    UPDATE audit_heads h
       SET seq = v_seq,
           hash = v_hash
     WHERE h.instance_id = p_instance
       AND h.chain = v_chain;
    RETURN v_seq;
END
$$;

COMMENT ON FUNCTION audit_append(TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT) IS
    'Appends one row to an audit chain inside the caller''s transaction and returns its seq: the chain of device p_device, or the instance''s own ('''') when p_device is NULL; the head''s row lock serializes appends to one chain until the transaction ends';

CREATE OR REPLACE FUNCTION audit_head_forward() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.instance_id <> OLD.instance_id
       OR NEW.chain <> OLD.chain
       OR NEW.seq <> OLD.seq + 1
       OR NOT EXISTS (SELECT 1
                        FROM audit_log l
                       WHERE l.instance_id = NEW.instance_id
                         AND l.chain = NEW.chain
                         AND l.seq = NEW.seq
                         AND l.hash = NEW.hash
                         AND l.prev_hash = OLD.hash) THEN
        RAISE EXCEPTION 'an audit chain head moves only to the row appended after it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
