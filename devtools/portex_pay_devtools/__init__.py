"""Developer tools: stub generation, the embedded PostgreSQL, the Telegram sandbox, `make run`."""
