"""A throwaway PostgreSQL schema per test, so parallel runs and engineers never collide."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import sqlalchemy as sa


def pg_schema_url(postgres_url: str, prefix: str = "ibt") -> Iterator[str]:
    """Yield a URL whose connections use a fresh schema; the schema is dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
