-- Sallyport schema, SQLite. Times are milliseconds since the Unix epoch (UTC).

-- One row per access request: scalar columns for queries, the whole aggregate in `body` (JSON).
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    entitlement TEXT NOT NULL,
    requester TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoke_pending INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX requests_state ON requests (state, id);
CREATE INDEX requests_requester ON requests (requester, id);
CREATE INDEX requests_entitlement ON requests (entitlement, id);

-- The durable job queue. One job per (kind, request); re-enqueueing bumps `generation`, so a
-- worker finishing an older generation leaves the newer one in place.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    locked_by TEXT,
    locked_until INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (kind, request_id)
);
CREATE INDEX jobs_due ON jobs (run_at);

-- The audit chain: every event carries the hash of the one before.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    channel TEXT NOT NULL,
    request_id TEXT,
    plugin TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_subject ON audit_events (subject, seq);
CREATE INDEX audit_actor ON audit_events (actor, seq);
CREATE INDEX audit_at ON audit_events (at);

-- The chain's head: the last event's sequence number and hash (detects a truncated tail).
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, 'sallyport-audit-genesis');

-- API tokens (CLI and automation). Only the SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
