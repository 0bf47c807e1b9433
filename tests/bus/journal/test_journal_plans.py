"""PostgreSQL plans the journal's per-batch lookups for the table as it is, not as it was when the process started.

psycopg prepares a statement on its fifth run and PostgreSQL then keeps one generic plan for it. Made while the
journal's tables were empty, that plan reads the whole table, and a worker's lookup per batch read every delivery
row ever written (bus.journal.engine: ``plan_cache_mode=force_custom_plan``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bus.journal import Journal
from bus.journal.engine import create_engine, custom_plans, normalise_url
from tests.helpers.pg import pg_schema_url


@pytest.fixture
def pg_journal(postgres_url: str) -> Iterator[Journal]:
    for url in pg_schema_url(postgres_url):
        journal = Journal(url)
        yield journal
        journal.close()


def _scans(conn: sa.Connection, table: str) -> tuple[int, int]:
    """This transaction's sequential and index scans of ``table`` (not yet flushed to the cumulative views)."""
    row = conn.execute(sa.text("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables "
                               "WHERE relname = :t AND schemaname = current_schema()"), {"t": table}).one()
    return int(row[0]), int(row[1])


def test_a_lookup_prepared_on_an_empty_table_uses_the_index_once_the_table_grew(pg_journal: Journal) -> None:
    with pg_journal.engine.connect() as conn, conn.begin():
        for _ in range(12):  # past psycopg's prepare threshold (5) and PostgreSQL's five custom plans
            assert pg_journal.delivered_keys(["k1", "k2"], conn=conn) == set()
        now = time.time()
        conn.execute(sa.text(
            "INSERT INTO ib_deliveries (idempotency_key, event_id, route, target, status, updated_at) "
            "SELECT 'k' || n, 'e' || n, 'r', 's.op', 'delivered', :now FROM generate_series(1, 20000) AS n"),
            {"now": now})
        seq_before, idx_before = _scans(conn, "ib_deliveries")
        assert pg_journal.delivered_keys(["k7", "k19999", "nope"], conn=conn) == {"k7", "k19999"}
        seq_after, idx_after = _scans(conn, "ib_deliveries")
    assert seq_after == seq_before, "the lookup read the whole ib_deliveries table"
    assert idx_after > idx_before


def test_the_urls_own_plan_cache_mode_is_kept() -> None:
    url = normalise_url("postgresql://u@db/j?options=-c%20plan_cache_mode%3Dauto")
    assert custom_plans(url).query["options"] == "-c plan_cache_mode=auto"
    other = custom_plans(normalise_url("postgresql://u@db/j?options=-csearch_path%3Dx"))
    assert other.query["options"] == "-csearch_path=x -c plan_cache_mode=force_custom_plan"


def test_the_sessions_plan_for_their_parameters(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
    finally:
        engine.dispose()
