-- Exact token revocation (service/auth.py). Keep in step with ../postgresql/0004_token_version.sql.
-- Every token carries the account's token_version as its `ver` claim (tokens from before this
-- migration have none and count as 0); a password change increments it in the same UPDATE, and a
-- token whose version differs is refused. Unlike 0003's `iat` cut-off this needs no clock.
-- 0 for every existing row keeps every existing token working. tokens_valid_after stays, frozen: it
-- still revokes tokens issued before password changes made under 0003 (see the PostgreSQL file).
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
