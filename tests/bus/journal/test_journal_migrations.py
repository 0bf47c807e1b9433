from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bus.election import Leases, leaders
from bus.envelope import Event
from bus.errors import ConfigError
from bus.journal import Journal, migrations
from bus.journal.engine import create_engine, normalise_url, read
from bus.outbox import Outbox, OutboxRelay, outbox_counts
from bus.queue.embedded import EmbeddedQueue
from tests.helpers.wait import wait_until


def _add_notes_table(conn: Connection) -> None:
    conn.execute(sa.text("CREATE TABLE ib_notes (id INTEGER PRIMARY KEY, note TEXT)"))


def test_a_v1_journal_opens_and_is_upgraded_by_a_later_step(journal_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a journal written by the current version, holding an event
    v1 = Journal(journal_url)
    shipped = len(migrations.MIGRATIONS)
    event = Event(type="order.changed", source="crm", data={"n": 1})
    v1.record_events([(event, "webhook")])
    assert v1.version == shipped
    v1.close()
    # When a release adds a migration step and opens the journal
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, _add_notes_table])
    v2 = Journal(journal_url)
    # Then the step ran once, the version moved on and the old data is intact
    assert v2.version == shipped + 1
    assert v2.get_event(event.id) == event
    with read(v2.engine) as conn:
        assert migrations.current_version(conn) == shipped + 1
        assert sa.inspect(conn).has_table("ib_notes")
    # and opening again runs nothing twice (a second CREATE TABLE would fail)
    assert migrations.migrate(v2.engine) == shipped + 1
    v2.close()


def test_a_journal_written_by_version_1_gains_the_system_state_table(journal_url: str) -> None:
    # Given a journal as the first release wrote it (step 1 only; no ib_system_state yet)
    engine = create_engine(journal_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ironbus_schema (version INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO ironbus_schema (version) VALUES (1)"))
        migrations.tables.metadata.create_all(conn, tables=[
            t for t in migrations.tables.metadata.sorted_tables
            if t.name not in ("ironbus_schema", "ib_system_state")])
    engine.dispose()
    # When this version opens it, then step 2 adds the table and the journal works
    journal = Journal(journal_url)
    try:
        assert journal.version == len(migrations.MIGRATIONS)
        with read(journal.engine) as conn:
            assert sa.inspect(conn).has_table("ib_system_state")
    finally:
        journal.close()


def test_a_journal_from_a_newer_ironbus_is_refused(journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, _add_notes_table])
    Journal(journal_url).close()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=f"schema version {len(migrations.MIGRATIONS) + 1}, newer than this"):
        Journal(journal_url)


def test_concurrent_opens_of_a_fresh_journal_both_succeed(journal_url: str) -> None:
    errors: list[BaseException] = []
    versions: list[int] = []

    def open_it() -> None:
        try:
            j = Journal(journal_url)
            versions.append(j.version)
            j.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert versions == [len(migrations.MIGRATIONS)] * 4


def test_postgres_urls_select_psycopg_and_bad_urls_are_config_errors() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        normalise_url("mysql://u@h/db")
    with pytest.raises(ConfigError, match="not a database URL"):
        normalise_url("nonsense")
    with pytest.raises(ConfigError, match="in-memory SQLite database cannot be shared"):
        create_engine("sqlite://")
    with pytest.raises(ConfigError, match="synchronous='sometimes'"):
        create_engine("sqlite:////tmp/x.sqlite?synchronous=sometimes")


def test_sqlite_journal_creates_its_directory_and_uses_wal(tmp_path: object) -> None:
    j = Journal(f"sqlite:///{tmp_path}/deep/er/ironbus.sqlite")
    with j.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    j.close()


def test_a_version_6_journal_gains_the_hardening_tables_and_its_outbox_and_leases_work(journal_url: str) -> None:
    # Given a journal at version 6: its own tables, and an outbox that the old code created on first use and
    # left a row in (the leases, rate buckets and circuits were never used, so they are missing)
    engine = create_engine(journal_url)
    assert migrations.migrate(engine, migrations.MIGRATIONS[:6]) == 6
    hardening = ("ib_outbox", "ib_leaders", "ib_rate_buckets", "ib_circuits")
    with engine.begin() as conn:
        for name in hardening:
            conn.execute(sa.text(f"DROP TABLE {name}"))  # step 1 of this version made them; version 6 did not
        conn.execute(sa.text("CREATE TABLE ib_outbox (event_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                             "recorded_at DOUBLE PRECISION NOT NULL)"))
        conn.execute(sa.text("INSERT INTO ib_outbox VALUES ('left-over', 'refused', 1.0)"))
    engine.dispose()
    # When this version opens it
    journal = Journal(journal_url)
    try:
        # Then step 7 ran: every table is there, the old row kept
        assert journal.version == len(migrations.MIGRATIONS) >= 7
        with read(journal.engine) as conn:
            assert all(sa.inspect(conn).has_table(name) for name in hardening)
        assert outbox_counts(journal, grace=0) == {"unpublished": 0, "refused": 1}
        # and the outbox journals, counts and relays an event
        queue = EmbeddedQueue(journal.engine)
        event = Event(type="order.changed", source="crm", data={"n": 1})
        Outbox(journal).record([(event, "webhook")])
        wait_until(lambda: outbox_counts(journal, grace=0)["unpublished"] == 1, timeout=5, what="a pending row")
        assert OutboxRelay(journal, queue, grace=0).relay_once() == 1
        assert [Event.decode(lease.message.body) for lease in queue.consume(10, 1.0)] == [event]
        assert outbox_counts(journal, grace=0) == {"unpublished": 0, "refused": 1}
        # and a trigger lease is held by one holder at a time
        a, b = Leases(journal.leases, ttl=30, holder="a"), Leases(journal.leases, ttl=30, holder="b")
        assert a.hold("crm.poll") and not b.hold("crm.poll")
        assert leaders(journal.leases)["crm.poll"][0] == "a"
        queue.close()
    finally:
        journal.close()


def test_a_journal_before_attempt_spans_gains_the_columns_and_keeps_its_attempts(journal_url: str) -> None:
    # Given a journal at the step before the attempt log had span columns, with one attempt logged
    from bus.journal.records import DeliveryUpdate

    step = migrations.MIGRATIONS.index(migrations._v8_attempt_spans)
    old = Journal(journal_url)
    old.settle([DeliveryUpdate("k1", "e1", "r", "scm.op", "pending", error="503", error_kind="transient")])
    old.close()
    engine = create_engine(journal_url)
    with engine.begin() as conn:
        for column in ("trace_id", "span_ids"):
            conn.execute(sa.text(f"ALTER TABLE ib_attempts DROP COLUMN {column}"))
        conn.execute(sa.text(f"UPDATE ironbus_schema SET version = {step}"))
    engine.dispose()
    # When this version opens it, then the step adds both columns, the old attempt reads without ids, and a
    # traced attempt stores its ids
    journal = Journal(journal_url)
    try:
        assert journal.version == len(migrations.MIGRATIONS)
        [before] = journal.attempts_for("k1")
        assert before.trace_id is None and before.span_ids is None
        journal.settle([DeliveryUpdate("k2", "e2", "r", "scm.op", "delivered")],
                       spans={"k2": ("ab" * 16, "cd" * 8)})
        [after] = journal.attempts_for("k2")
        assert (after.trace_id, after.span_ids) == ("ab" * 16, "cd" * 8)
    finally:
        journal.close()


def test_a_journal_before_delivering_attempts_on_the_row_reads_its_logged_successes_once(journal_url: str) -> None:
    # Given a journal at the step before a delivery row kept its delivering attempt: that version logged every
    # attempt, successes included, in ib_attempts
    from bus.journal.records import DeliveryUpdate

    step = migrations.MIGRATIONS.index(migrations._v9_delivering_attempt)
    Journal(journal_url).close()
    engine = create_engine(journal_url)
    with engine.begin() as conn:
        for column in ("started_at", "duration_ms", "trace_id", "span_ids"):
            conn.execute(sa.text(f"ALTER TABLE ib_deliveries DROP COLUMN {column}"))
        conn.execute(sa.text("INSERT INTO ib_deliveries (idempotency_key, event_id, route, target, status, attempts, "
                             "parks, updated_at, delivered_at) VALUES ('k1', 'e1', 'r', 'scm.op', 'delivered', 1, 0, "
                             "10.0, 10.0)"))
        conn.execute(sa.text("INSERT INTO ib_attempts (idempotency_key, event_id, route, target, attempt, status, "
                             "started_at, duration_ms) VALUES ('k1', 'e1', 'r', 'scm.op', 1, 'ok', 9.5, 12.0)"))
        conn.execute(sa.text(f"UPDATE ironbus_schema SET version = {step}"))
    engine.dispose()
    # When this version opens it, then the step adds the columns, the old success is read once from the log,
    # and a new success is kept on its delivery row
    journal = Journal(journal_url)
    try:
        assert journal.version == len(migrations.MIGRATIONS)
        assert [(a.attempt, a.status, a.started_at, a.duration_ms) for a in journal.attempts_for("k1")] == \
            [(1, "ok", 9.5, 12.0)]
        journal.settle([DeliveryUpdate("k2", "e2", "r", "scm.op", "delivered", started_at=20.0, duration_ms=3.0)])
        [after] = journal.attempts_for("k2")
        assert (after.id, after.status, after.started_at, after.duration_ms) == (0, "ok", 20.0, 3.0)
    finally:
        journal.close()
