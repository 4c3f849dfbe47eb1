-- The request log stores its repetitive strings once: a record's organization, principal,
-- action and user agent become ids into `request_log_terms` (about 70 bytes less per record,
-- where an action alone is some 50 bytes). Terms are never deleted or changed, so an id always
-- means the same string. The view `request_log_records` reads the records with their strings.
CREATE TABLE request_log_terms (
    id INTEGER PRIMARY KEY,
    term TEXT NOT NULL
);
-- Unique up to 500 characters, which an index entry always holds (PostgreSQL refuses index
-- entries over about 2.7 kB); a longer term, rare, may be stored more than once.
CREATE UNIQUE INDEX request_log_terms_term ON request_log_terms (term) WHERE length(term) <= 500;
INSERT INTO request_log_terms (term)
    SELECT org FROM request_log UNION SELECT principal FROM request_log
    UNION SELECT action FROM request_log UNION SELECT user_agent FROM request_log;

CREATE TABLE request_log_interned (
    seq INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    org_term INTEGER NOT NULL,
    principal_term INTEGER NOT NULL,
    action_term INTEGER NOT NULL,
    resource TEXT NOT NULL,
    result TEXT NOT NULL,
    status INTEGER NOT NULL,
    ip TEXT NOT NULL,
    user_agent_term INTEGER NOT NULL,
    latency_us BIGINT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO request_log_interned (seq, at, request_id, org_term, principal_term, action_term,
        resource, result, status, ip, user_agent_term, latency_us, hash)
    SELECT r.seq, r.at, r.request_id,
        (SELECT min(id) FROM request_log_terms WHERE term = r.org),
        (SELECT min(id) FROM request_log_terms WHERE term = r.principal),
        (SELECT min(id) FROM request_log_terms WHERE term = r.action),
        r.resource, r.result, r.status, r.ip,
        (SELECT min(id) FROM request_log_terms WHERE term = r.user_agent),
        r.latency_us, r.hash
    FROM request_log r;
DROP TABLE request_log;
ALTER TABLE request_log_interned RENAME TO request_log;
CREATE INDEX request_log_at ON request_log (at);

-- Outer joins: a record whose term was deleted by hand still shows, with '' in its place,
-- and fails verification itself.
CREATE VIEW request_log_records AS
    SELECT r.seq, r.at, r.request_id, COALESCE(o.term, '') AS org,
        COALESCE(p.term, '') AS principal, COALESCE(a.term, '') AS action,
        r.resource, r.result, r.status, r.ip, COALESCE(u.term, '') AS user_agent,
        r.latency_us, r.hash
    FROM request_log r
    LEFT JOIN request_log_terms o ON o.id = r.org_term
    LEFT JOIN request_log_terms p ON p.id = r.principal_term
    LEFT JOIN request_log_terms a ON a.id = r.action_term
    LEFT JOIN request_log_terms u ON u.id = r.user_agent_term;
