"""PostgreSQL through asyncpg: the pool, migrations and repositories."""
