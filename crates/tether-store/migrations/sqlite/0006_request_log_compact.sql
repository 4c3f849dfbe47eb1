-- The request log, compacted (about a quarter fewer bytes written per request):
-- * `seq` becomes the rowid (INTEGER PRIMARY KEY), so the table needs no separate index on it;
-- * a record's hash is stored as its 32 bytes instead of 64 hex digits;
-- * a record's previous hash is no longer stored: it is the hash of the record before it. The
--   hash that precedes the oldest kept record is kept as the chain's anchor, in `chain_heads`
--   under 'requests:anchor' (retention pruning moves it forward).
INSERT INTO chain_heads (chain, seq, hash)
    SELECT 'requests:anchor', seq, prev_hash FROM request_log ORDER BY seq LIMIT 1;

CREATE TABLE request_log_compact (
    seq INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    org TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    result TEXT NOT NULL,
    status INTEGER NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    latency_us BIGINT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO request_log_compact (seq, at, request_id, org, principal, action, resource, result,
        status, ip, user_agent, latency_us, hash)
    SELECT seq, at, request_id, org, principal, action, resource, result, status, ip,
        user_agent, latency_us, unhex(hash)
    FROM request_log;
DROP TABLE request_log;
ALTER TABLE request_log_compact RENAME TO request_log;
CREATE INDEX request_log_at ON request_log (at);
