-- The request log stores a batch of records per row instead of a record per row: the seq
-- range, the range of the records' times, the hash before the batch, and the records in a
-- compact binary form (see tether-store's request_log/codec.rs). The server moves the
-- records of the old table into batches when it opens the database (keeping their hashes),
-- so the old table is left empty; its time index is no longer needed.
CREATE TABLE request_log_batches (
    last_seq BIGINT PRIMARY KEY,
    first_seq BIGINT NOT NULL,
    min_at BIGINT NOT NULL,
    max_at BIGINT NOT NULL,
    prev_hash BYTEA NOT NULL,
    records BYTEA NOT NULL
);
-- Retention finds the batches to prune by their newest time.
CREATE INDEX request_log_batches_max_at ON request_log_batches (max_at);
DROP INDEX IF EXISTS request_log_at;
