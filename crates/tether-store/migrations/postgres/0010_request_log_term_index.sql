-- Each batch of request records lists the distinct ids of its records' organization,
-- principal and action terms (a few bytes; see tether-store's request_log/codec.rs), so that
-- a search by one of them skips the batches that lack it without reading their records.
-- Batches written before have none (NULL) and are read as before. Verification checks the
-- index against the records.
ALTER TABLE request_log_batches ADD COLUMN term_index BYTEA;
