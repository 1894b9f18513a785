-- Token scopes: `api` (bearer tokens for the CLI and automation) and `web` (browser sessions,
-- carried in a cookie). A token works only where its scope says.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'api';

-- Single-use secrets with a deadline (OIDC sign-in state, CLI login codes): only the SHA-256
-- of the secret is stored; taking one deletes it.
CREATE TABLE one_time (
    hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    data TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX one_time_expires ON one_time (expires_at);
