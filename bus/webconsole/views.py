"""The console's pages: Search, Transaction, Dead letters, Routes, Systems, Queue, Master data, Audit.

Each handler takes the app, the request and the session and returns a response; ``ROUTES`` lists them with
the method, the path pattern and whether the operator role is needed. Actions reuse the CLI's code (``dlq
retry`` → :func:`bus.dlqretry.retry_dead_letters`, ``xref check`` → :func:`bus.masterdata.check_master_data`)
and are audited in the journal.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson

from bus.dlqretry import retry_dead_letters
from bus.envelope import Event
from bus.errors import ConfigError
from bus.journal import consoledata as data
from bus.pipeline import Pipeline
from bus.queue.open import broker_url, open_queue
from bus.refusals import SystemAdapters
from bus.systemstate import read_state
from bus.webconsole.auth import Session
from bus.webconsole.context import Console
from bus.webconsole.graph import route_graph
from bus.webconsole.http import HttpError, Request, Response, redirect
from bus.webconsole.masking import masked

__all__ = ["ROUTES"]

STATUSES = ("delivered", "parked", "dead", "stale", "shadow", "unchanged", "filtered", "invalid", "pending")


def _epoch(text: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise HttpError(400, f"time {text[:40]!r}: expected an ISO date/time like 2026-12-07T09:30") from None


def home(app: Console, request: Request, session: Session) -> Response:
    return redirect(f"{app.prefix}/search")


# -- search and transaction ----------------------------------------------------------------------------------
def search(app: Console, request: Request, session: Session) -> Response:
    q = data.SearchQuery(key=request.arg("key"), event_id=request.arg("event_id"),
                         correlation=request.arg("correlation"), route=request.arg("route"),
                         system=request.arg("system"), status=request.arg("status"),
                         since=_epoch(request.arg("since")), until=_epoch(request.arg("until")),
                         before=request.arg("before"))
    if q.status and q.status not in STATUSES:
        raise HttpError(400, f"status {q.status[:40]!r}: expected one of {', '.join(STATUSES)}")
    page = data.search(app.context.journal, q)
    config = app.context.config()
    args = {k: request.arg(k) for k in ("key", "event_id", "correlation", "route", "system", "status", "since",
                                          "until")}
    return app.render("search.html", session, page=page, q=args, statuses=STATUSES,
                      routes=[r.name for r in config.routes] if config else [],
                      systems=sorted(config.systems) if config else [], nav="search")


def transaction(app: Console, request: Request, session: Session) -> Response:
    event_id = request.arg("event_id")
    chain = data.transaction(app.context.journal, event_id)
    if chain is None:
        raise HttpError(404, f"no event {event_id[:80]!r} in the journal")
    ids = {e["id"] for e in chain["events"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in chain["events"]:
        children.setdefault(e["causationid"] if e["causationid"] in ids else None, []).append(e)
    letters = data.letters_for(app.context.journal, sorted(ids))
    template = app.context.tracing_url
    tracing = _trace_link(template, chain["trace_id"]) if template and chain["trace_id"] else ""
    for e in chain["events"]:
        for d in e["deliveries"]:
            for a in d["attempt_log"]:  # each attempt's spans, linked to the tracing tool when configured
                a["spans"] = [(span, _trace_link(template, a["trace_id"], span) if template else "")
                              for span in a["span_ids"]]
    return app.render("transaction.html", session, chain=chain, children=children, selected=event_id,
                      letters=letters, tracing=tracing, nav="search")


def _trace_link(template: str, trace_id: str, span_id: str = "") -> str:
    """The tracing tool's address of a trace (and span): ``template`` with ``{trace_id}`` and ``{span_id}``
    (or ``{{ trace_id }}``, ``{{ span_id }}``) filled in, e.g. ``https://jaeger.example/trace/{trace_id}``."""
    link = template
    for name, value in (("trace_id", trace_id), ("span_id", span_id)):
        link = link.replace("{{ " + name + " }}", value).replace("{{" + name + "}}", value)
        link = link.replace("{" + name + "}", value)
    return link


# -- dead letters --------------------------------------------------------------------------------------------
def dead_letters(app: Console, request: Request, session: Session) -> Response:
    route, system, reason = request.arg("route"), request.arg("system"), request.arg("reason")
    rows = data.dead_letter_rows(app.context.journal, route=route, system=system, reason=reason)
    config = app.context.config()
    return app.render("deadletters.html", session, rows=rows, q={"route": route, "system": system, "reason": reason},
                      routes=[r.name for r in config.routes] if config else [],
                      systems=sorted(config.systems) if config else [], message=request.arg("message"),
                      nav="dlq")


def dead_letter(app: Console, request: Request, session: Session) -> Response:
    letter_id = _int(request.arg("id"))
    row = app.context.journal.dead_letter_by_id(letter_id)
    if row is None:
        raise HttpError(404, f"no dead letter #{letter_id}")
    try:
        event: Event | None = Event.decode(row.body)
    except Exception:  # an undecodable message: show its bytes, offer no edit
        event = None
    history = data.audit_rows(app.context.journal, subject=f"dead_letter:{letter_id}")
    return app.render("deadletter.html", session, row=row, event=event, history=history,
                      body=row.body.decode("utf-8", "replace"), message=request.arg("message"), nav="dlq")


def retry(app: Console, request: Request, session: Session) -> Response:
    ids = [_int(i) for i in request.fields("ids")]
    if not ids:
        raise HttpError(400, "select at least one dead letter to retry")
    message = _retry(app, ids, session)
    back = request.field("back") or "dlq"
    if back == "one" and len(ids) == 1:
        return redirect(f"{app.prefix}/dlq/{ids[0]}?message={_q(message)}")
    return redirect(f"{app.prefix}/dlq?message={_q(message)}")


def _retry(app: Console, ids: list[int], session: Session) -> str:
    journal = app.context.journal
    rows = [r for i in ids if (r := journal.dead_letter_by_id(i)) is not None]
    own = app.context.queue is None
    queue = app.context.queue or open_queue(broker_url(None), journal)
    try:
        def pipeline() -> Pipeline | None:
            config = app.context.config()
            return Pipeline(config, xref=journal.xref) if config is not None else None

        config = app.context.config()
        systems = SystemAdapters(config, journal, lambda name: app.context.open_adapters(config)[name]) \
            if config is not None else None
        try:
            done = retry_dead_letters(journal, rows, queue, pipeline, systems)
        finally:
            if systems is not None:
                systems.close()
    finally:
        if own:
            queue.close()
    emitted = [letter.id for letter, _ in done.followups.emitted] if done.followups else []
    reread = [letter.id for letter, _ in done.reread.emitted] if done.reread else []
    failed = [(letter.id, why) for letter, why in done.failed]
    data.record_audit(journal, session.user, session.role, "dead_letter.retry", ",".join(map(str, ids)),
                      {"requeued": done.requeued, "followups_emitted": emitted, "failed": failed,
                       "skipped": done.skipped})
    parts = [f"re-queued {len(done.requeued)} dead letter(s) on the current routes"]
    if emitted:
        parts.append(f"emitted {len(emitted)} follow-up(s)")
    if reread:
        parts.append(f"read {len(reread)} refused document(s) again")
    if failed:
        parts.append("still failing: " + "; ".join(f"#{i}: {why}" for i, why in failed))
    if done.skipped:
        parts.append(f"skipped {len(done.skipped)} no longer dead")
    return ", ".join(parts)


def edit(app: Console, request: Request, session: Session) -> Response:
    letter_id = _int(request.arg("id"))
    text = request.field("data")
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"the edited payload is not JSON: {exc}") from None
    try:
        data.edit_dead_letter(app.context.journal, letter_id, payload, session.user, session.role)
    except ValueError as exc:
        raise HttpError(409, str(exc)) from None
    message = "payload edited (journaled)"
    if request.field("and_retry") == "1":
        message += "; " + _retry(app, [letter_id], session)
    return redirect(f"{app.prefix}/dlq/{letter_id}?message={_q(message)}")


def purge(app: Console, request: Request, session: Session) -> Response:
    ids = [_int(i) for i in request.fields("ids")]
    if not ids:
        raise HttpError(400, "select at least one dead letter to purge")
    journal = app.context.journal
    if request.field("confirm") != "yes":
        rows = [r for i in ids if (r := journal.dead_letter_by_id(i)) is not None and r.state == "dead"]
        return app.render("purge.html", session, rows=rows, nav="dlq")
    n = journal.mark_dead_letters(ids, "purged")
    data.record_audit(journal, session.user, session.role, "dead_letter.purge", ",".join(map(str, ids)),
                      {"purged": n})
    return redirect(f"{app.prefix}/dlq?message={_q(f'purged {n} dead letter(s)')}")


# -- routes, systems, queue ----------------------------------------------------------------------------------
def routes(app: Console, request: Request, session: Session) -> Response:
    config = app.context.config()
    figures = data.route_figures(app.context.journal)
    parked = data.parked_counts(app.context.journal)
    plans = _plans(config, app.context) if config else {}
    described = []
    for route in config.routes if config else ():
        system = config.systems.get(route.source.partition(".")[0]) if config else None
        described.append({"route": route, "figures": figures.get(route.name, {"counts": {}}),
                          "parked": parked.get(route.name, 0), "trigger": _trigger_kind(config, route.source),
                          "timing": _timing(route.timing, plans.get(route.source)),
                          "source_adapter": system.adapter if system else "event"})
    return app.render("routes.html", session, routes=described, graph=route_graph(config) if config else "",
                      fragment=request.htmx, nav="routes")


def systems(app: Console, request: Request, session: Session) -> Response:
    config = app.context.config()
    journal = app.context.journal
    live = app.context.snapshot() if app.context.snapshot is not None else {}
    stored = {s["system"]: s for s in read_state(journal)}
    errors = data.system_errors(journal, time.time() - 86400)
    marks = data.watermarks(journal)
    rows = []
    names = sorted((set(config.systems) if config else set()) | set(stored) | set(errors))
    for name in names:
        system = config.systems.get(name) if config else None
        state = live.get(name) or stored.get(name) or {}
        rows.append({"name": name, "adapter": system.adapter if system else "?",
                     "settings": masked(system.settings) if system else {},
                     "circuit": state.get("circuit"), "rate_limit": state.get("rate_limit"),
                     "errors": errors.get(name, {}), "watermarks": [m for m in marks if m["system"] == name]})
    return app.render("systems.html", session, systems=rows, fragment=request.htmx, nav="systems")


def queue(app: Console, request: Request, session: Session) -> Response:
    journal = app.context.journal
    own = app.context.queue is None
    q = app.context.queue or open_queue(broker_url(None), journal)
    try:
        depth = q.depth()
    finally:
        if own:
            q.close()
    figures = data.queue_figures(journal)
    parked = sum(data.parked_counts(journal).values())
    return app.render("queue.html", session, depth=depth, figures=figures, parked=parked, fragment=request.htmx,
                      nav="queue")


# -- master data ---------------------------------------------------------------------------------------------
def masterdata(app: Console, request: Request, session: Session) -> Response:
    entity = request.arg("entity")
    rows = app.context.journal.xref_rows(entity or None)
    return app.render("masterdata.html", session, rows=rows[:1000], total=len(rows), entity=entity, report=None,
                      message=request.arg("message"), nav="masterdata")


def masterdata_check(app: Console, request: Request, session: Session) -> Response:
    from bus.masterdata import check_master_data

    config = app.context.config()
    if config is None:
        raise ConfigError("xref check reads master data from the systems of a routes file; start the console with "
                          "--routes")
    adapters = app.context.open_adapters(config)
    try:
        for adapter in adapters.values():
            adapter.open()
        report = check_master_data(adapters, app.context.journal.xref_rows())
    finally:
        for adapter in adapters.values():
            adapter.close()
    data.record_audit(app.context.journal, session.user, session.role, "xref.check", "xref",
                      {"problems": len(report["problems"])})
    rows = app.context.journal.xref_rows()
    return app.render("masterdata.html", session, rows=rows[:1000], total=len(rows), entity="", report=report,
                      message="", nav="masterdata")


def masterdata_link(app: Console, request: Request, session: Session) -> Response:
    entity, canonical = request.field("entity").strip(), request.field("canonical").strip()
    system, system_id = request.field("system").strip(), request.field("system_id").strip()
    if not (entity and canonical and system and system_id):
        raise HttpError(400, "linking needs entity, canonical id, system and the system's id")
    journal = app.context.journal
    before = journal.xref.lookup(entity, system, system_id)
    journal.xref.link(entity, canonical, system, system_id)
    data.record_audit(journal, session.user, session.role, "xref.link", f"xref:{entity}:{system}:{system_id}",
                      {"before": before, "after": canonical})
    return redirect(f"{app.prefix}/masterdata?message={_q(f'linked {entity} {system}:{system_id} -> {canonical}')}")


def audit(app: Console, request: Request, session: Session) -> Response:
    return app.render("audit.html", session, rows=data.audit_rows(app.context.journal, 200), nav="audit")


def logout(app: Console, request: Request, session: Session) -> Response:
    return Response(b"", 303, "text/plain", [(b"location", f"{app.prefix}/login".encode()),
                                             (b"set-cookie", f"ib_console=; Path={app.prefix}; Max-Age=0".encode())])


# -- helpers -------------------------------------------------------------------------------------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HttpError(400, f"{text[:40]!r} is not a dead-letter id") from None


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:500])


def _trigger_kind(config: Any, source: str) -> str:
    from bus.plugins import load_adapter_class

    system_name, _, trigger = source.partition(".")
    system = config.systems.get(system_name)
    if system is None:
        return "follow-up event"
    try:
        spec = load_adapter_class(system.adapter, system.location).triggers.get(trigger)
    except Exception:  # an adapter that does not load: lint says why; the console still shows the route
        return "?"
    return spec.kind if spec is not None else "ironbus send"


def _timing(timing: Any, plan: Any = None) -> str:
    """When a route runs: its own timing, else its poll trigger's schedule or interval."""
    if not isinstance(timing, str):
        return f"batch of {timing.size} or every {timing.window:g} s"
    if timing != "realtime":
        return f"schedule {timing}"
    if plan is not None:
        return f"schedule {', '.join(plan.schedules)}" if plan.schedules else f"polled every {plan.interval:g} s"
    return "real time"


_PLANS: dict[int, tuple[Any, dict[str, Any]]] = {}


def _plans(config: Any, context: Any) -> dict[str, Any]:
    """The poll/schedule plan of each trigger (``system.trigger``) the routes listen to, per routes file."""
    cached = _PLANS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    from bus.triggers import plan_triggers

    try:
        found = {plan.name: plan for plan in plan_triggers(config, context.open_adapters(config))}
    except Exception:  # an adapter that cannot be built here: lint says why; show the routes' own timing
        found = {}
    _PLANS.clear()
    _PLANS[id(config)] = (config, found)
    return found


ROUTES: list[tuple[str, str, Any, bool]] = [
    ("GET", r"/", home, False),
    ("GET", r"/search", search, False),
    ("GET", r"/tx/(?P<event_id>[^/]{1,200})", transaction, False),
    ("GET", r"/dlq", dead_letters, False),
    ("GET", r"/dlq/(?P<id>\d{1,18})", dead_letter, False),
    ("POST", r"/dlq/retry", retry, True),
    ("POST", r"/dlq/purge", purge, True),
    ("POST", r"/dlq/(?P<id>\d{1,18})/edit", edit, True),
    ("GET", r"/routes", routes, False),
    ("GET", r"/systems", systems, False),
    ("GET", r"/queue", queue, False),
    ("GET", r"/masterdata", masterdata, False),
    ("POST", r"/masterdata/check", masterdata_check, True),
    ("POST", r"/masterdata/link", masterdata_link, True),
    ("GET", r"/audit", audit, False),
    ("POST", r"/logout", logout, False),
]
