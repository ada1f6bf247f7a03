"""PostgreSQL and SQLite: the engine and its pools, the cooperative driver, migrations, foreign-key mapping."""
