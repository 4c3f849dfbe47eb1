-- Secrets: per-organization key-encryption keys and immutable, encrypted secret versions.
CREATE TABLE org_keks (
    org_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    provider TEXT NOT NULL,          -- 'local' (wrapped by the root key) or a KMS provider
    key_id TEXT NOT NULL,
    wrapped BLOB,                    -- the KEK wrapped by the root key (local provider)
    created_at BIGINT NOT NULL,
    active BIGINT NOT NULL,          -- 1 for the KEK that wraps new DEKs
    PRIMARY KEY (org_id, version)
);

CREATE TABLE secret_versions (
    secret_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    env_id TEXT NOT NULL,
    blob BLOB,                       -- envelope v1; NULL once destroyed
    kek_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    destroyed_at BIGINT,
    PRIMARY KEY (secret_id, version)
);
