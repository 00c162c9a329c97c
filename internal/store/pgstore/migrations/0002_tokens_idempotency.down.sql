DROP TABLE drover_idempotency_keys;
DROP TABLE drover_tokens;
