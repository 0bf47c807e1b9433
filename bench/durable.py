"""Events/s of the durable path: publish -> consume -> journal settle -> ack.

Measured in one run:
  * embedded default: SQLite journal + embedded lease queue in the same file;
  * scale-out: RabbitMQ queue (AmqpQueue) + PostgreSQL journal;
  * baseline: raw kombu on the same RabbitMQ (publish with confirm_publish=True, consume, ack), no journal.
A producer thread journals events and publishes them in batches of 100 (as the ingestor does); two consumer
threads consume batches, settle one delivery per event in one journal transaction per batch, then ack.
Prints the figures and the ratio against raw kombu, and ends with one JSON line.

Usage: python bench/durable.py [--events 10000] [--amqp URL] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa
import structlog

from bus.envelope import Event
from bus.journal import DeliveryUpdate, Journal, idempotency_key
from bus.queue.amqp import AmqpQueue
from bus.queue.base import Message
from bus.queue.embedded import EmbeddedQueue

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def durable_path(journal: Journal, queue: Any, events: int, consumers: int = 2) -> float:
    """Events/s through journal + queue + settle + ack."""
    batch = [Event(type="order.changed", source="crm", data={"order": n, "lines": [{"qty": 1}] * 3},
                   key=f"SO-{n % 500}") for n in range(events)]
    done = [0]
    lock = threading.Lock()

    def produce() -> None:
        for start in range(0, events, 100):
            chunk = batch[start:start + 100]
            journal.record_events([(e, "webhook") for e in chunk])
            queue.publish([Message(body=e.encode(), key=e.key) for e in chunk])

    def consume() -> None:
        while True:
            with lock:
                if done[0] >= events:
                    return
            leases = queue.consume(100, 0.5)
            if not leases:
                continue
            now = time.time()
            updates = []
            for lease in leases:
                event = Event.decode(lease.message.body)
                updates.append(DeliveryUpdate(idempotency_key(event.id, "bench", "scm.update"), event.id, "bench",
                                              "scm.update", "delivered", 1, started_at=now, duration_ms=0.1))
            journal.settle(updates)
            queue.ack_many(leases)
            with lock:
                done[0] += len(leases)

    started = time.perf_counter()
    threads = [threading.Thread(target=produce)] + [threading.Thread(target=consume) for _ in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return events / (time.perf_counter() - started)


def raw_kombu(url: str, events: int) -> float:
    """Events/s for kombu alone: confirmed persistent publishes, then consume and ack, one queue."""
    import kombu

    name = f"ibbench-raw-{uuid.uuid4().hex[:8]}"
    body = Event(type="order.changed", source="crm", data={"order": 1, "lines": [{"qty": 1}] * 3}).encode()
    exchange = kombu.Exchange(name, type="direct", durable=True)
    queue = kombu.Queue(name, exchange, routing_key=name, durable=True)
    received = [0]
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as pub, kombu.Connection(url) as sub:
        producer = kombu.Producer(pub.channel(), exchange=exchange)
        queue.bind(producer.channel).declare()

        def on_message(message: Any) -> None:
            message.ack()
            received[0] += 1

        started = time.perf_counter()

        def produce() -> None:
            for _ in range(events):
                producer.publish(body, routing_key=name, delivery_mode=2, content_type="application/octet-stream",
                                 content_encoding="binary")

        thread = threading.Thread(target=produce)
        thread.start()
        try:
            with kombu.Consumer(sub.channel(), queues=[queue], on_message=on_message, prefetch_count=100):
                while received[0] < events:
                    try:
                        sub.drain_events(timeout=1)
                    except TimeoutError:
                        pass
            thread.join()
            rate = events / (time.perf_counter() - started)
        finally:
            queue.bind(producer.channel).delete()
            exchange.bind(producer.channel).delete()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--amqp", default=os.environ.get("IRONBUS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//"))
    parser.add_argument("--postgres", default=os.environ.get("IRONBUS_TEST_POSTGRES",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    n = args.events
    figures: dict[str, Any] = {"events": n}

    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(f"sqlite:///{tmp}/ironbus.sqlite")
        figures["embedded_sqlite_eps"] = round(durable_path(journal, EmbeddedQueue(journal.engine), n))
        journal.close()
    print(f"embedded (SQLite journal + lease queue):   {figures['embedded_sqlite_eps']:>7} events/s")

    schema = f"ibbench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.postgres)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    amqp_name = f"ibbench-{uuid.uuid4().hex[:8]}"
    queue: AmqpQueue | None = None
    try:
        journal = Journal(f"{args.postgres}?options=-csearch_path%3D{schema}")
        figures["embedded_postgres_eps"] = round(durable_path(journal, EmbeddedQueue(journal.engine), n))
        print(f"embedded (PostgreSQL journal + lease queue): {figures['embedded_postgres_eps']:>5} events/s")
        queue = AmqpQueue(args.amqp, name=amqp_name)
        figures["rabbitmq_postgres_eps"] = round(durable_path(journal, queue, n))
        journal.close()
    finally:
        if queue is not None:  # whatever happened, the shared broker keeps nothing of this run
            queue.close()
            queue.delete_topology()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    print(f"RabbitMQ queue + PostgreSQL journal:       {figures['rabbitmq_postgres_eps']:>7} events/s")

    figures["raw_kombu_eps"] = round(raw_kombu(args.amqp, n))
    print(f"raw kombu baseline (confirms, no journal): {figures['raw_kombu_eps']:>7} events/s")
    figures["rabbitmq_postgres_vs_raw_kombu"] = round(figures["rabbitmq_postgres_eps"] / figures["raw_kombu_eps"], 2)
    figures["embedded_vs_raw_kombu"] = round(figures["embedded_sqlite_eps"] / figures["raw_kombu_eps"], 2)
    print(f"ratio RabbitMQ+PostgreSQL / raw kombu: {figures['rabbitmq_postgres_vs_raw_kombu']}x; "
          f"embedded / raw kombu: {figures['embedded_vs_raw_kombu']}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
