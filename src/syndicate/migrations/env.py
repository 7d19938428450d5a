"""Alembic environment: syndicate passes its own engine; there is no alembic.ini."""

from alembic import context
from sqlalchemy import text

from syndicate.store.models import Base

engine = context.config.attributes["engine"]

# Every syndicate process upgrades the schema when it opens the database. On PostgreSQL
# several may start at once (schedulers, workers, the web side): a transaction-scoped
# advisory lock lets one upgrade while the others wait, then find nothing left to do.
# (SQLite's write lock does the same there.)
MIGRATION_LOCK = 0x5359_4E44  # "SYND"

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
