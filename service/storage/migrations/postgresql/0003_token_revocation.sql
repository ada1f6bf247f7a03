-- Token revocation on password change (service/auth.py). Keep in step with ../sqlite/0003_token_revocation.sql.
-- Tokens whose `iat` (epoch seconds) is before this value are refused; a password change sets it to
-- the time of the change. 0 = nothing revoked, which is right for every existing row. Adding a column
-- with a constant default is a metadata-only change on PostgreSQL 11+: no table rewrite, brief lock.
ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
