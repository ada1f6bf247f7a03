-- Idempotency-Key records (service/idempotency.py). Keep in step with ../postgresql/0002_idempotency_keys.sql.
-- SQLite variant: the response body as a BLOB, timestamps as ISO 8601 text in UTC (they sort as text).
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,                -- 'user:<id>', or 'anonymous' for registration
    key TEXT NOT NULL,                  -- the client's Idempotency-Key, 1-255 visible ASCII characters
    fingerprint TEXT NOT NULL,          -- HMAC-SHA256 of method, path and canonical body (hex)
    status INTEGER,                     -- NULL only inside the transaction that claimed the key
    body BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
-- The bounded purge of expired rows walks this index from its oldest end.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
