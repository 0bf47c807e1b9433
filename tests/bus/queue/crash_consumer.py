"""Child process for the crash test: consumes forever, records each message body in a SQLite file, then acks.

The parent SIGKILLs it at random moments; whatever it had claimed but not acked must come back.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from bus.journal import Journal
from bus.queue.amqp import AmqpQueue
from bus.queue.embedded import EmbeddedQueue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal")
    parser.add_argument("--amqp")
    parser.add_argument("--name", default="ironbus")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args()
    queue: EmbeddedQueue | AmqpQueue
    if args.amqp:
        queue = AmqpQueue(args.amqp, name=args.name, partitions=4, prefetch=32)
    else:
        queue = EmbeddedQueue(Journal(args.journal).engine, lease_seconds=args.lease, max_poll_interval=0.05)
    out = sqlite3.connect(args.out, isolation_level=None)
    out.execute("PRAGMA journal_mode=WAL")
    out.execute("PRAGMA busy_timeout=10000")
    out.execute("CREATE TABLE IF NOT EXISTS processed (body TEXT NOT NULL, delivery_count INTEGER NOT NULL)")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        leases = queue.consume(25, 1.0)
        if not leases:
            continue
        out.execute("BEGIN")
        out.executemany("INSERT INTO processed VALUES (?, ?)",
                        [(lease.message.body.decode(), lease.delivery_count) for lease in leases])
        out.execute("COMMIT")
        queue.ack_many(leases)


if __name__ == "__main__":
    main()
