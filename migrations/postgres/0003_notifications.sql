-- People Sallyport has seen sign in (with their groups as of then), so notifications can reach
-- the members of a reviewer group. Static `[[users]]` from the configuration count too.
CREATE TABLE people (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- How far the audit chain has been turned into deliveries: the row `*` holds the sequence
-- number of the last event expanded. It starts at the chain's head: history is not notified.
CREATE TABLE notify_cursor (
    request_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO notify_cursor (request_id, seq) SELECT '*', seq FROM audit_head WHERE id = 1;

-- The notification outbox: one row per message to one recipient (an e-mail to a person, a
-- webhook call). Delivered by the notifier with retries and backoff; `key` makes expansion
-- idempotent. Rows hold no secrets: approval links are minted at send time.
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    locked_by TEXT,
    locked_until BIGINT,
    state TEXT NOT NULL DEFAULT 'queued',
    done_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, run_at);
CREATE INDEX deliveries_request ON deliveries (request_id);

-- Approval links sent by e-mail: only the SHA-256 of the 256-bit token is stored, bound to the
-- request, the reviewer and the action; single use; expiring with the request.
CREATE TABLE approval_links (
    hash TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX approval_links_request ON approval_links (request_id, reviewer);

-- Dev mode without SMTP: the messages Sallyport would have sent, shown on the outbox page.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
