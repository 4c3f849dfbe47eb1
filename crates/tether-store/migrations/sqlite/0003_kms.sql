-- Customer-managed KEKs and external secret backends.
-- org_keks rows of a KMS provider have no `wrapped` material: `key_id` names the customer's key
-- (an AWS KMS key ARN, an OpenBao Transit key). Where a version's encrypted blob lives:
-- 'builtin' (secret_versions.blob), or an external backend that holds the same envelope bytes
-- under `backend_ref` while Tether keeps the version history here.
ALTER TABLE secret_versions ADD COLUMN backend TEXT NOT NULL DEFAULT 'builtin';
ALTER TABLE secret_versions ADD COLUMN backend_ref TEXT;

-- The backend that stores new versions of an organization's secrets (absent: builtin).
CREATE TABLE org_backends (
    org_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'openbao-kv' or 'aws-secretsmanager'
    config TEXT NOT NULL,            -- JSON, no credentials (mount, prefix, region)
    updated_at BIGINT NOT NULL
);
