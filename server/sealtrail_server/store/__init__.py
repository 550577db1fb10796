"""PostgreSQL: the pool, migrations, the appender, queries and tokens."""
