-- The request log stores its repetitive strings once: a record's organization, principal,
-- action and user agent become ids into `request_log_terms` (about 70 bytes less per record,
-- where an action alone is some 50 bytes). Terms are never deleted or changed, so an id always
-- means the same string. The view `request_log_records` reads the records with their strings.
CREATE TABLE request_log_terms (
    id BIGSERIAL PRIMARY KEY,
    term TEXT NOT NULL
);
-- Unique up to 500 characters, which an index entry always holds (PostgreSQL refuses index
-- entries over about 2.7 kB); a longer term, rare, may be stored more than once.
CREATE UNIQUE INDEX request_log_terms_term ON request_log_terms (term) WHERE length(term) <= 500;
INSERT INTO request_log_terms (term)
    SELECT org FROM request_log UNION SELECT principal FROM request_log
    UNION SELECT action FROM request_log UNION SELECT user_agent FROM request_log;

ALTER TABLE request_log
    ADD COLUMN org_term BIGINT,
    ADD COLUMN principal_term BIGINT,
    ADD COLUMN action_term BIGINT,
    ADD COLUMN user_agent_term BIGINT;
UPDATE request_log r SET
    org_term = (SELECT min(id) FROM request_log_terms WHERE term = r.org),
    principal_term = (SELECT min(id) FROM request_log_terms WHERE term = r.principal),
    action_term = (SELECT min(id) FROM request_log_terms WHERE term = r.action),
    user_agent_term = (SELECT min(id) FROM request_log_terms WHERE term = r.user_agent);
ALTER TABLE request_log
    DROP COLUMN org,
    DROP COLUMN principal,
    DROP COLUMN action,
    DROP COLUMN user_agent,
    ALTER COLUMN org_term SET NOT NULL,
    ALTER COLUMN principal_term SET NOT NULL,
    ALTER COLUMN action_term SET NOT NULL,
    ALTER COLUMN user_agent_term SET NOT NULL;

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
