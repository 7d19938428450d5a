"""Alembic environment: syndicate passes its own engine; there is no alembic.ini."""

from alembic import context

from syndicate.store.models import Base

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
