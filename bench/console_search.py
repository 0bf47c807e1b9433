"""How fast the console's views answer on a big journal: generates N events (default 1,000,000) with their
deliveries and attempts into a fresh journal — SQLite, and PostgreSQL when it runs on 127.0.0.1:5432 — then
times each view's queries (median of 5).

The journal looks like a busy bus's: transactions of three events (an inbound change and two follow-ups)
spread over 30 days and 3 source systems, one delivery and one attempt per event on 3 routes, ~1% dead,
~1.5% parked. The schema, migrations included, is the product's (bus.journal), so the indexes measured are
the ones migrations create. Usage: ``python bench/console_search.py [--events N] [--skip-postgres]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus.journal import Journal, tables  # noqa: E402
from bus.webconsole import data  # noqa: E402

ROUTES = [("demand", "scm.update_demand"), ("procurement", "srm.create_po"), ("confirm", "crm.add_note")]
SOURCES = ["ironbus/crm", "ironbus/scm", "ironbus/srm"]
DAYS = 30


def rows(n: int, seed: int = 11) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    rnd = random.Random(seed)
    now = time.time()
    start = now - DAYS * 86400
    correlation = ""
    root = ""
    for i in range(n):
        if i % 3 == 0:
            correlation = str(uuid.UUID(int=rnd.getrandbits(128)))
            root = correlation
        event_id = correlation if i % 3 == 0 else str(uuid.UUID(int=rnd.getrandbits(128)))
        at = start + (i / n) * DAYS * 86400
        key = f"SO-{i // 3:07d}"
        route, target = ROUTES[i % 3]
        roll = rnd.random()
        status = "dead" if roll < 0.01 else "parked" if roll < 0.025 else "stale" if roll < 0.03 else "delivered"
        body = json.dumps({"specversion": "1.0", "id": event_id, "source": SOURCES[i % 3], "type": f"t{i % 3}",
                           "correlationid": correlation, "key": key, "data": {"n": i, "qty": i % 17}}).encode()
        event = {"id": event_id, "type": f"t{i % 3}", "source": SOURCES[i % 3], "subject": None, "key": key,
                 "sequence": None, "correlationid": correlation, "causationid": None if i % 3 == 0 else root,
                 "time": None, "received_at": at, "origin": "webhook" if i % 3 == 0 else "followup", "body": body}
        ikey = f"{event_id}:{route}:{target}"
        delivery = {"idempotency_key": ikey, "event_id": event_id, "route": route, "target": target,
                    "status": status, "attempts": 1, "parks": 1 if status == "parked" else 0,
                    "next_attempt_at": at + 60 if status == "parked" else None,
                    "last_error": "HTTP 400: bad quantity" if status == "dead" else None, "reference": None,
                    "payload": json.dumps({"n": i}), "updated_at": at + 0.05,
                    "delivered_at": at + 0.05 if status == "delivered" else None}
        attempt = {"idempotency_key": ikey, "event_id": event_id, "route": route, "target": target, "attempt": 1,
                   "status": "ok" if status == "delivered" else "permanent", "error": delivery["last_error"],
                   "started_at": at + 0.01, "duration_ms": 12.5}
        yield event, delivery, attempt


def load(journal: Journal, n: int) -> float:
    started = time.perf_counter()
    batch: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    if journal.dialect == "postgresql":
        _copy(journal, n)
        return time.perf_counter() - started
    for triple in rows(n):
        batch.append(triple)
        if len(batch) == 20_000:
            _insert(journal, batch)
            batch = []
    if batch:
        _insert(journal, batch)
    return time.perf_counter() - started


def _insert(journal: Journal, batch: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]) -> None:
    with journal.engine.begin() as conn:
        conn.execute(tables.events.insert(), [e for e, _, _ in batch])
        conn.execute(tables.deliveries.insert(), [d for _, d, _ in batch])
        conn.execute(tables.attempts.insert(), [a for _, _, a in batch])
        dead = [{"event_id": d["event_id"], "route": d["route"], "target": d["target"], "reason": d["last_error"],
                 "error_kind": "permanent", "attempts": 1, "body": e["body"], "created_at": d["updated_at"],
                 "state": "dead"} for e, d, _ in batch if d["status"] == "dead"]
        if dead:
            conn.execute(tables.dead_letters.insert(), dead)


def _copy(journal: Journal, n: int) -> None:
    """PostgreSQL: COPY, the way a bulk load is done there."""
    raw = journal.engine.raw_connection()
    try:
        cur = raw.cursor()
        cols = {t: [c.name for c in table.columns if c.name != "id" or t == "events"]
                for t, table in (("events", tables.events), ("deliveries", tables.deliveries),
                                 ("attempts", tables.attempts))}
        with cur.copy(f"COPY ib_events ({', '.join(cols['events'])}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for e, _, _ in rows(n):
                copy.write_row([e[c] for c in cols["events"]])
        with cur.copy(f"COPY ib_deliveries ({', '.join(cols['deliveries'])}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for _, d, _ in rows(n):
                copy.write_row([d[c] for c in cols["deliveries"]])
        with cur.copy(f"COPY ib_attempts ({', '.join(cols['attempts'])}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for _, _, a in rows(n):
                copy.write_row([a[c] for c in cols["attempts"]])
        with cur.copy("COPY ib_dead_letters (event_id, route, target, reason, error_kind, attempts, body, created_at, "
                      "state) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for e, d, _ in rows(n):
                if d["status"] == "dead":
                    copy.write_row([d["event_id"], d["route"], d["target"], d["last_error"], "permanent", 1,
                                    e["body"], d["updated_at"], "dead"])
        raw.commit()
        cur.execute("ANALYZE")  # what autovacuum does on its own shortly after a load
        raw.commit()
    finally:
        raw.close()


def timed(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def measure(journal: Journal, n: int) -> dict[str, float]:
    rnd = random.Random(5)
    i = rnd.randrange(n)
    event, _, _ = next(r for k, r in enumerate(rows(n)) if k == i)
    now = time.time()
    first = data.search(journal, data.SearchQuery())
    cases: dict[str, Callable[[], Any]] = {
        "newest page (no filter)": lambda: data.search(journal, data.SearchQuery()),
        "page 2 (cursor)": lambda: data.search(journal, data.SearchQuery(before=first.next_cursor or "")),
        "business key": lambda: data.search(journal, data.SearchQuery(key=event["key"])),
        "event id": lambda: data.search(journal, data.SearchQuery(event_id=event["id"])),
        "correlation id": lambda: data.search(journal, data.SearchQuery(correlation=event["correlationid"])),
        "status dead": lambda: data.search(journal, data.SearchQuery(status="dead")),
        "route + status parked": lambda: data.search(journal, data.SearchQuery(route="demand", status="parked")),
        "route": lambda: data.search(journal, data.SearchQuery(route="procurement")),
        "system (from or to)": lambda: data.search(journal, data.SearchQuery(system="srm")),
        "time range (1 day, 10 days ago)": lambda: data.search(journal, data.SearchQuery(
            since=now - 11 * 86400, until=now - 10 * 86400)),
        "status dead in a time range": lambda: data.search(journal, data.SearchQuery(
            status="dead", since=now - 11 * 86400, until=now - 10 * 86400)),
        "transaction view": lambda: data.transaction(journal, event["id"]),
        "routes view figures": lambda: data.route_figures(journal, max_age=0),
        "dead letters inbox (200)": lambda: data.dead_letter_rows(journal),
        "dead letters by system": lambda: data.dead_letter_rows(journal, system="srm"),
        "systems view (errors, watermarks)": lambda: (data.system_errors(journal, now - 86400),
                                                      data.watermarks(journal)),
        "queue view (lanes, parked)": lambda: (data.queue_figures(journal), data.parked_counts(journal)),
    }
    out = {}
    for name, fn in cases.items():
        ms, result = timed(fn)
        found = len(result.rows) if isinstance(result, data.Page) else ""
        print(f"  {name:<34} {ms:9.1f} ms  {found}", flush=True)
        out[name] = round(ms, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--sqlite-file", type=Path, default=None,
                        help="keep the SQLite journal here (and reuse it, without loading, when it exists)")
    parser.add_argument("--pg-schema", default=None,
                        help="keep the PostgreSQL journal in this schema (and reuse it when it exists)")
    args = parser.parse_args()
    figures: dict[str, Any] = {"events": args.events}
    if not args.skip_sqlite:
        folder = Path(tempfile.mkdtemp(prefix="ironbus-console-"))
        path = args.sqlite_file or folder / "big.sqlite"
        reuse = path.exists()
        journal = Journal(f"sqlite:///{path}")
        if not reuse:
            print(f"SQLite: loading {args.events} events …", flush=True)
            seconds = load(journal, args.events)
            print(f"  loaded in {seconds:.0f} s ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
        figures["sqlite"] = measure(journal, args.events)
        journal.close()
        if args.sqlite_file is None:
            for f in folder.iterdir():
                f.unlink()
        folder.rmdir() if not any(folder.iterdir()) else None
    if not args.skip_postgres:
        import sqlalchemy as sa

        pg = os.environ.get("IRONBUS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        schema = args.pg_schema or f"console_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(pg)
        with admin.begin() as conn:
            reuse = conn.execute(sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                                 {"s": schema}).first() is not None
            if not reuse:
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        try:
            journal = Journal(f"{pg}?options=-csearch_path%3D{schema}")
            if not reuse:
                print(f"PostgreSQL: loading {args.events} events …", flush=True)
                seconds = load(journal, args.events)
                print(f"  loaded in {seconds:.0f} s", flush=True)
            figures["postgresql"] = measure(journal, args.events)
            journal.close()
        finally:
            if args.pg_schema is None:
                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
