-- Retention deletes the request log's interned strings (principals, user agents, organization
-- names) that no kept record uses any more: each term records the seq of the latest record
-- that used it, to within a few thousand records (the server refreshes it as it writes). The
-- terms that exist now are marked as used up to the chain's head, which covers every record
-- written so far, including those of the old table that the server moves into batches.
ALTER TABLE request_log_terms ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
UPDATE request_log_terms
    SET last_seq = COALESCE((SELECT seq FROM chain_heads WHERE chain = 'requests'), 0);
CREATE INDEX request_log_terms_last_seq ON request_log_terms (last_seq);
