-- Secrets at rest (issue 21): the credentials below are stored sealed, as
-- `v1.<data key id>.<base64url of AES-256-GCM nonce + ciphertext + tag>`, bound to their row and
-- column (adapters/postgres/sealed.py). The schema keeps `text`: sealing happens in the service,
-- which alone holds the keys, so no SQL statement ever carries a plaintext secret. The rows that
-- earlier versions stored in plain text are sealed by every start after this migration (a data
-- step in Python, since it needs PORTEX_DATA_KEY, which `portex-pay migrate` does not).
COMMENT ON COLUMN applications.bot_token IS
    'sealed: v1.<data key id>.<AES-GCM nonce+ciphertext>, bound to applications.bot_token:<id>';
COMMENT ON COLUMN applications.webhook_secret IS
    'sealed: v1.<data key id>.<AES-GCM nonce+ciphertext>, bound to applications.webhook_secret:<id>';
COMMENT ON COLUMN applications.signing_secret IS
    'sealed: v1.<data key id>.<AES-GCM nonce+ciphertext>, bound to applications.signing_secret:<id>';
COMMENT ON COLUMN relay_bots.webhook_secret IS
    'sealed: v1.<data key id>.<AES-GCM nonce+ciphertext>, bound to relay_bots.webhook_secret:<bot_id>';
