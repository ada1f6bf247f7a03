-- Idempotency-Key records (service/idempotency.py). Keep in step with ../sqlite/0002_idempotency_keys.sql.
-- A row is inserted first in the transaction of the create it guards and completed (status, body) in
-- that same transaction, so a committed row always has its response and its created resource.
-- A concurrent duplicate waits on the primary key's row lock until the first commits or rolls back.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,                -- 'user:<id>', or 'anonymous' for registration
    key TEXT NOT NULL,                  -- the client's Idempotency-Key, 1-255 visible ASCII characters
    fingerprint TEXT NOT NULL,          -- HMAC-SHA256 of method, path and canonical body (hex)
    status INTEGER,                     -- NULL only inside the transaction that claimed the key
    body BYTEA,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
-- The bounded purge of expired rows walks this index from its oldest end.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
