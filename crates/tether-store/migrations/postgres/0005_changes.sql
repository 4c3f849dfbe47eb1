-- What each committed write changed, for the other nodes sharing this database: their caches
-- drop the rows, their authorization indexes apply the tuples. Pruned after a few minutes.
CREATE TABLE changes (
    seq BIGSERIAL PRIMARY KEY,
    node TEXT NOT NULL,
    at BIGINT NOT NULL,
    body TEXT NOT NULL
);
