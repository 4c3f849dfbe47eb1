-- Kept in step with PostgreSQL's schema. An SQLite file has one server, so nothing writes here.
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    at BIGINT NOT NULL,
    body TEXT NOT NULL
);
