-- Public keys that have signed action attestations, published at /.well-known/jwks.json until
-- the last token each signed has expired (`not_after`), even after the key left the config.
-- Public keys only: the private keys stay in the files the config names.
CREATE TABLE attestation_keys (
    kid TEXT PRIMARY KEY,
    jwk TEXT NOT NULL,
    not_after INTEGER NOT NULL
);
