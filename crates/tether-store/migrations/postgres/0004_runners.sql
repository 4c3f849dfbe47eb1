-- Runners: the certificates issued to each runner (serials checked on every tunnel handshake)
-- and what the server last learned about each runner. Live status (connected, last heartbeat)
-- is kept in memory; this table keeps the last values across restarts.
CREATE TABLE runner_certificates (
    serial TEXT PRIMARY KEY,          -- hex of the certificate serial
    org_id TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX runner_certificates_runner ON runner_certificates (runner_id);

CREATE TABLE runner_status (
    runner_id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    version TEXT NOT NULL,
    capabilities TEXT NOT NULL        -- JSON array of operation names
);
