"""The journal's tables (SQLAlchemy Core), as of the latest migration step.

Every table name starts with ``ib_`` so the journal can share a database with other software. Times are
float epoch seconds. These definitions are what queries use; :mod:`bus.journal.migrations` creates and
evolves them.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "aggregate_items",
    "attempts",
    "audit",
    "circuits",
    "console_indexes",
    "dead_letters",
    "deliveries",
    "events",
    "key_versions",
    "metadata",
    "queue",
    "schema_version",
    "seen",
    "system_state",
    "last_payloads",
    "leaders",
    "outbox",
    "rate_buckets",
    "watermarks",
    "xref",
]

metadata = sa.MetaData()

schema_version = sa.Table(
    "ironbus_schema", metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

events = sa.Table(
    "ib_events", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("key", sa.Text),
    sa.Column("sequence", sa.BigInteger),
    sa.Column("correlationid", sa.Text),
    sa.Column("causationid", sa.Text),
    sa.Column("time", sa.Text),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("ib_events_correlationid", "correlationid"),
    sa.Index("ib_events_key", "key"),
    sa.Index("ib_events_received_at", "received_at"),
)

deliveries = sa.Table(
    "ib_deliveries", metadata,
    sa.Column("idempotency_key", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("parks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double),
    sa.Column("last_error", sa.Text),
    sa.Column("reference", sa.Text),
    sa.Column("payload", sa.Text),  # JSON
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("delivered_at", sa.Double),
    # the attempt that delivered it (migration step 9): a successful attempt is kept here instead of as a row
    # of ib_attempts, which holds the attempts that did not deliver (see Journal.settle)
    sa.Column("started_at", sa.Double),
    sa.Column("duration_ms", sa.Double),
    sa.Column("trace_id", sa.Text),
    sa.Column("span_ids", sa.Text),
    sa.Index("ib_deliveries_event_id", "event_id"),
    sa.Index("ib_deliveries_route_target_status", "route", "target", "status"),
)

attempts = sa.Table(
    "ib_attempts", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("duration_ms", sa.Double, nullable=False),
    # the attempt's OpenTelemetry span(s), only written with tracing on (migration step 7): the trace id, and
    # the span ids of the calls this row's pass made (quick retries: several, space-separated)
    sa.Column("trace_id", sa.Text),
    sa.Column("span_ids", sa.Text),
    sa.Index("ib_attempts_idempotency_key", "idempotency_key"),
    sa.Index("ib_attempts_event_id", "event_id"),
)

dead_letters = sa.Table(
    "ib_dead_letters", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text),
    sa.Column("route", sa.Text),
    sa.Column("target", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("error_kind", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="dead"),
    sa.Index("ib_dead_letters_state_created", "state", "created_at"),
    sa.Index("ib_dead_letters_event_id", "event_id"),
)

key_versions = sa.Table(
    "ib_key_versions", metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("last_sequence", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

xref = sa.Table(
    "ib_xref", metadata,
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("system", sa.Text, nullable=False),
    sa.Column("system_id", sa.Text, nullable=False),
    sa.Column("canonical_id", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.UniqueConstraint("entity", "system", "system_id", name="ib_xref_system_id"),
    sa.Index("ib_xref_canonical", "entity", "canonical_id", "system"),
)

watermarks = sa.Table(
    "ib_watermarks", metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("trigger", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

seen = sa.Table(
    "ib_seen", metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("trigger", sa.Text, primary_key=True),
    sa.Column("dedup_key", sa.Text, primary_key=True),
    sa.Column("seen_at", sa.Double, nullable=False),
    sa.Index("ib_seen_seen_at", "seen_at"),
)

# The embedded work queue (bus.queue.embedded) lives beside the journal so one file holds all durable state.
queue = sa.Table(
    "ib_queue", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key", sa.Text),
    sa.Column("route", sa.Text),
    sa.Column("target", sa.Text),
    sa.Column("parks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("headers", sa.Text),  # JSON object, or NULL when empty
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("available_at", sa.Double, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", sa.Double),
    sa.Column("delivery_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("enqueued_at", sa.Double, nullable=False),
    sa.Index("ib_queue_key_id", "key", "id"),
    sa.Index("ib_queue_available", "available_at", "id"),
)

# Added by migration step 2: what each running process last saw of each system's protections (rate limit,
# circuit breaker), so that `ironbus status` in another process can show it.
system_state = sa.Table(
    "ib_system_state", metadata,
    sa.Column("process", sa.Text, primary_key=True),
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),  # JSON snapshot
    sa.Column("updated_at", sa.Double, nullable=False),
)

# Added by migration step 3: a digest of the last payload delivered per route:target and business key, so a
# route with `skip_unchanged: true` does not deliver the same content twice (echoes of the bus's own writes).
last_payloads = sa.Table(
    "ib_last_payloads", metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# Added by migration step 4: what adapters keep per system (EDI control numbers per partner, interchanges
# awaiting acknowledgement …), through adapters.base.AdapterStore.
adapter_state = sa.Table(
    "ib_adapter_state", metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# Added by migration step 5: what operators did in the console (retry, edit, purge, link), with who, when and
# before/after; and the indexes the console's searches and route figures read by.
audit = sa.Table(
    "ib_audit", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("detail", sa.Text),  # JSON: the request's parameters, before/after of an edit
    sa.Index("ib_audit_at", "at"),
)
console_indexes = (
    sa.Index("ib_deliveries_status_route", deliveries.c.status, deliveries.c.route),
    sa.Index("ib_deliveries_route_delivered", deliveries.c.route, deliveries.c.delivered_at),
)

# Added by migration step 6: open groups of the routes' aggregate steps (bus.aggregate), one row per gathered
# event, until the group is released (complete or timed out) and its rows deleted in the same transaction.
aggregate_items = sa.Table(
    "ib_aggregate_items", metadata,
    sa.Column("route", sa.Text, primary_key=True),
    sa.Column("group_key", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Double, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text),
    sa.Column("deadline", sa.Double, nullable=False),
    sa.Index("ib_aggregate_items_deadline", "deadline"),
)

# Added by migration step 7 (before it, created on first use by the modules that used them): the hardening
# tables. The outbox holds an inbound event between its journal commit and its publish (bus.outbox);
# ``state`` is 'pending' or 'refused' (the publish failed and the source was told to retry).
outbox = sa.Table(
    "ib_outbox", metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.Double, nullable=False),
    sa.Index("ib_outbox_state_recorded", "state", "recorded_at"),
)

# One lease per poll/schedule trigger: who runs it, until when (bus.election).
leaders = sa.Table(
    "ib_leaders", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("until", sa.Double, nullable=False),
)

# A system's rate-limit token bucket shared by every process (bus.sharedstate.SharedRateLimiter).
rate_buckets = sa.Table(
    "ib_rate_buckets", metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("blocked_until", sa.Double, nullable=False),
)

# A system's circuit as the last process that opened or closed it wrote it (bus.sharedstate.SharedCircuitBreaker);
# ``opened_at`` NULL: closed.
circuits = sa.Table(
    "ib_circuits", metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("opened_at", sa.Double),
    sa.Column("updated_at", sa.Double, nullable=False),
)
