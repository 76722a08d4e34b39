"""SQL storage (SQLAlchemy Core, async) for SQLite and PostgreSQL, and its migrations."""
