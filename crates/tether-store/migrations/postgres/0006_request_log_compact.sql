-- The request log stores a record's hash as its 32 bytes instead of 64 hex digits, and no
-- longer stores its previous hash: that is the hash of the record before it. The hash that
-- precedes the oldest kept record is kept as the chain's anchor, in `chain_heads` under
-- 'requests:anchor' (retention pruning moves it forward).
INSERT INTO chain_heads (chain, seq, hash)
    SELECT 'requests:anchor', seq, prev_hash FROM request_log ORDER BY seq LIMIT 1;
ALTER TABLE request_log DROP COLUMN prev_hash;
ALTER TABLE request_log ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');
