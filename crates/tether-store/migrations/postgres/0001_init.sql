-- Tether schema v1 (PostgreSQL). Times are Unix milliseconds; ids are typed strings.
CREATE TABLE resources (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,           -- '' for organizations themselves
    env_id TEXT NOT NULL,           -- '' for org-level resources
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    version_id TEXT NOT NULL,
    UNIQUE (org_id, env_id, kind, name)
);
CREATE INDEX resources_kind ON resources (org_id, kind, env_id);

CREATE TABLE tuples (
    object TEXT NOT NULL,
    relation TEXT NOT NULL,
    subject TEXT NOT NULL,
    org_id TEXT NOT NULL,
    source_id TEXT NOT NULL,        -- the resource whose write created this tuple
    condition TEXT,
    PRIMARY KEY (object, relation, subject)
);
CREATE INDEX tuples_subject ON tuples (subject, relation);
CREATE INDEX tuples_source ON tuples (source_id);

CREATE TABLE credentials (
    principal_id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    owner_kind TEXT NOT NULL,
    name TEXT NOT NULL,
    hash BYTEA NOT NULL,
    display TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_owner ON api_keys (owner_id);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    token_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE chain_heads (
    chain TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE versions (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    resource_kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    env_id TEXT NOT NULL,
    previous_version_id TEXT,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL,
    message TEXT,
    yaml_before TEXT,
    yaml_after TEXT,
    diff TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (org_id, seq)
);
CREATE INDEX versions_resource ON versions (resource_id, seq);

CREATE TABLE request_log (
    seq BIGINT PRIMARY KEY,
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
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX request_log_at ON request_log (at);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
