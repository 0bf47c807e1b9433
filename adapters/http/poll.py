"""Poll triggers declared in the ``http`` adapter's settings: any JSON API, no Python.

A poll trigger asks an endpoint for what changed since its watermark, pages through the answer, finds the
records with a JMESPath, and hands them to the bus with a dedup key each; the bus stores the new watermark
only after the records are journaled, so a restart resumes where the last completed poll ended::

    polls:
      tickets_changed:
        path: /api/v2/tickets
        query: {updated_since: "{{ watermark }}", sort: updated_at}
        records: data                       # JMESPath to the list of records in each page
        key: id                             # dedup key: id + version
        version: updated_at
        watermark: {field: updated_at}      # or {header: X-Server-Time} or {cursor: meta.sync_token}
        paging: {type: cursor, param: cursor, next: meta.next_cursor}

Templates (``path``, ``query`` and ``body`` values; :mod:`adapters.templates`) see ``{{ watermark }}``,
``{{ offset }}``, ``{{ page }}``, ``{{ cursor }}`` and ``{{ limit }}``. A query parameter whose template names
the watermark is left out while there is none yet (the first poll reads everything, unless
``watermark.initial`` says where to start).

The ``odata`` variant writes the query itself: ``$filter=<changed> ge <watermark - overlap>``, ordered by
the change field and key, records from ``value`` (V4) or ``d.results`` (V2), next pages from
``@odata.nextLink`` or ``__next``, V2 ``/Date(ms)/`` stamps read as ISO timestamps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from adapters.base import PollResult, TriggerSpec
from adapters.http.client import HttpClient
from adapters.http.template import Template, url_template
from adapters.http.transport import Response
from bus.config import parse_duration
from bus.errors import ConfigError, MappingError, PermanentError
from bus.expr import Expression, compile_expression

__all__ = ["POLL_SCHEMA", "PollConfig", "parse_polls", "poll", "trigger_specs"]

_EXPR: dict[str, Any] = {"type": "string", "minLength": 1}
_DURATION: dict[str, Any] = {"oneOf": [{"type": "number", "minimum": 0},
                                       {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$"}]}

POLL_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "A poll trigger: an endpoint asked on an interval (settings.triggers.<name>) for changes.",
    "properties": {
        "description": {"type": "string"},
        "method": {"enum": ["GET", "POST"], "default": "GET"},
        "path": {"type": "string", "description": "Path under base_url (template), or the OData entity set."},
        "query": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "Query parameters (templates: {{ watermark }}, {{ offset }}, {{ page }}, "
                                 "{{ cursor }}, {{ limit }})."},
        "body": {"type": "object", "additionalProperties": {"type": "string"},
                 "description": "For POST searches: a JSON object whose values are templates like query."},
        "records": {**_EXPR, "description": "JMESPath to the records in a page (default: the page itself)."},
        "key": {**_EXPR, "description": "JMESPath to a record's id (dedup key; default: a hash of the record)."},
        "version": {**_EXPR, "description": "JMESPath to a record's change stamp, added to the dedup key."},
        "watermark": {
            "type": "object", "additionalProperties": False,
            "description": "Where the next poll's watermark comes from: exactly one of field, header, cursor.",
            "properties": {
                "field": {**_EXPR, "description": "JMESPath on each record; the largest value is kept."},
                "header": {"type": "string", "minLength": 1, "description": "A response header (first page)."},
                "cursor": {**_EXPR, "description": "JMESPath on the last page: an opaque sync token."},
                "initial": {"type": "string", "description": "Watermark of the very first poll."},
            },
            "oneOf": [{"required": ["field"]}, {"required": ["header"]}, {"required": ["cursor"]}],
        },
        "paging": {
            "type": "object", "additionalProperties": False, "required": ["type"],
            "properties": {
                "type": {"enum": ["none", "offset", "page", "cursor", "next_link"]},
                "param": {"type": "string", "description": "Query parameter carrying offset / page / cursor."},
                "size_param": {"type": "string", "description": "Query parameter carrying the page size."},
                "size": {"type": "integer", "minimum": 1, "default": 100},
                "start": {"type": "integer", "minimum": 0, "description": "First offset (0) or page (1)."},
                "next": {**_EXPR, "description": "JMESPath on a page giving the next cursor or URL."},
                "link_header": {"type": "boolean", "description": "Next URL from the Link header (rel=next)."},
                "max_pages": {"type": "integer", "minimum": 1, "default": 100},
            },
        },
        "odata": {
            "type": "object", "additionalProperties": False, "required": ["changed"],
            "description": "The OData variant: path is the entity set; the query is written for you.",
            "properties": {
                "version": {"enum": [2, 4], "default": 4},
                "changed": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_/]*$",
                            "description": "The change-date property filtered on (e.g. LastChangeDateTime)."},
                "key": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                        "description": "Key property: a tie-break in $orderby and the dedup key."},
                "literal": {"enum": ["datetimeoffset", "datetime", "plain"],
                            "description": "How the watermark is written in $filter (V2 default datetimeoffset)."},
                "overlap": {**_DURATION, "description": "How far each poll looks back (default 5s)."},
                "page_size": {"type": "integer", "minimum": 1, "description": "$top per request."},
                "select": {"type": "string"}, "expand": {"type": "string"},
                "filter": {"type": "string", "description": "More $filter, and-ed with the change filter."},
            },
        },
        "max_records": {"type": "integer", "minimum": 1, "default": 10000,
                        "description": "Records one poll takes at most; the rest come next poll."},
    },
    "anyOf": [{"required": ["path", "records", "watermark"]}, {"required": ["path", "odata"]}],
}


@dataclass(frozen=True)
class PollConfig:
    name: str
    description: str
    method: str
    path: Template
    query: dict[str, Template]
    body: dict[str, Template]
    records: Expression | None
    key: Expression | None
    version: Expression | None
    mark_field: Expression | None
    mark_header: str | None
    mark_cursor: Expression | None
    initial: str | None
    paging: Mapping[str, Any]
    max_records: int
    odata: Mapping[str, Any] | None
    next: Expression | None = None


def _expr(system: str, where: str, text: str | None) -> Expression | None:
    if text is None:
        return None
    try:
        return compile_expression(text)
    except ConfigError as exc:
        raise ConfigError(f"system {system!r}: settings/{where}: bad JMESPath {text!r}: {exc.message}") from None


def _template(system: str, where: str, text: str) -> Template:
    return url_template(text, f"system {system!r}: settings/{where}")


def parse_polls(system: str, doc: Mapping[str, Any] | None) -> dict[str, PollConfig]:
    """Compile ``settings.polls`` (already schema-checked); template and JMESPath errors name the field."""
    out: dict[str, PollConfig] = {}
    for name, spec in (doc or {}).items():
        where = f"polls/{name}"
        odata = spec.get("odata")
        mark = spec.get("watermark") or {}
        paging = dict(spec.get("paging") or {"type": "none"})
        if paging["type"] in ("offset", "page", "cursor") and not paging.get("param"):
            raise ConfigError(f"system {system!r}: settings/{where}/paging: type {paging['type']!r} needs 'param'")
        if paging["type"] == "cursor" and not paging.get("next"):
            raise ConfigError(f"system {system!r}: settings/{where}/paging: type 'cursor' needs 'next'")
        if paging["type"] == "next_link" and not (paging.get("next") or paging.get("link_header")):
            raise ConfigError(f"system {system!r}: settings/{where}/paging: type 'next_link' needs 'next' or "
                              "'link_header: true'")
        if odata is not None:
            version = int(odata.get("version", 4))
            changed = str(odata["changed"])
            mark = {"field": changed, "initial": mark.get("initial")}
            records = "d.results" if version == 2 else "value"
            key = spec.get("key") or odata.get("key")
            paging = {"type": "next_link", "next": "d.__next" if version == 2 else '"@odata.nextLink"',
                      "max_pages": paging.get("max_pages", 1000)}
        else:
            records = spec.get("records")
            key = spec.get("key")
        out[name] = PollConfig(
            name=name, description=str(spec.get("description") or f"Records from {spec.get('path')} (polled)"),
            method=str(spec.get("method", "GET")), path=_template(system, f"{where}/path", str(spec["path"])),
            query={k: _template(system, f"{where}/query/{k}", v) for k, v in (spec.get("query") or {}).items()},
            body={k: _template(system, f"{where}/body/{k}", v) for k, v in (spec.get("body") or {}).items()},
            records=_expr(system, f"{where}/records", records), key=_expr(system, f"{where}/key", key),
            version=_expr(system, f"{where}/version", spec.get("version") or mark.get("field")),
            mark_field=_expr(system, f"{where}/watermark/field", mark.get("field")),
            mark_header=str(mark["header"]).lower() if mark.get("header") else None,
            mark_cursor=_expr(system, f"{where}/watermark/cursor", mark.get("cursor")),
            initial=mark.get("initial"), paging=paging, max_records=int(spec.get("max_records", 10000)),
            odata=odata, next=_expr(system, f"{where}/paging/next", paging.get("next")))
    return out


def trigger_specs(polls: Mapping[str, Any] | None) -> dict[str, TriggerSpec]:
    """The trigger specs ``settings.polls`` declares (for lint, the planner and ``ironbus adapters``)."""
    if not isinstance(polls, Mapping):
        return {}
    return {str(name): TriggerSpec(str(name), "poll", "poll",
                                   str((spec or {}).get("description") or "declared in settings.polls"), 60.0)
            for name, spec in polls.items() if isinstance(spec, Mapping)}


# -- running one poll -------------------------------------------------------------------------------------
_V2_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def _stamp(value: Any) -> Any:
    """A change stamp comparable across records: V2 ``/Date(ms)/`` as ISO, numbers as numbers."""
    if isinstance(value, str):
        match = _V2_DATE.match(value)
        if match:
            moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(match.group(1)))
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return value


def _newer(a: Any, b: Any) -> bool:
    """Whether stamp ``a`` is later than ``b``: numbers numerically, ISO timestamps as instants, else text."""
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return a > b
    ta, tb = _instant(a), _instant(b)
    if ta is not None and tb is not None:
        return ta > tb
    return str(a) > str(b)


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value[:4].isdigit():
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _odata_literal(mark: str, spec: Mapping[str, Any]) -> str:
    moment = _instant(mark)
    if moment is None:
        raise PermanentError(f"watermark {mark!r} is not an ISO timestamp (OData polls filter on a date)")
    overlap = spec.get("overlap", 5)
    moment -= dt.timedelta(seconds=float(overlap) if isinstance(overlap, int | float) else parse_duration(overlap))
    text = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    style = spec.get("literal") or ("datetimeoffset" if int(spec.get("version", 4)) == 2 else "plain")
    if style == "datetime":
        return f"datetime'{text[:-1]}'"
    return f"datetimeoffset'{text}'" if style == "datetimeoffset" else text


def _odata_query(cfg: PollConfig, mark: str | None) -> dict[str, str]:
    spec = cfg.odata or {}
    changed, key = str(spec["changed"]), spec.get("key")
    query = {"$orderby": f"{changed} asc" + (f",{key} asc" if key else "")}
    filters = [f"({spec['filter']})"] if spec.get("filter") else []
    if mark:
        filters.insert(0, f"{changed} ge {_odata_literal(mark, spec)}")
    if filters:
        query["$filter"] = " and ".join(filters)
    for option in ("select", "expand"):
        if spec.get(option):
            query[f"${option}"] = str(spec[option])
    if spec.get("page_size"):
        query["$top"] = str(spec["page_size"])
    if int(spec.get("version", 4)) == 2:
        query["$format"] = "json"
    return query


def _link_next(response: Response) -> str | None:
    header = response.header("link") or ""
    for part in header.split(","):
        if re.search(r'rel="?next"?', part):
            found = re.search(r"<([^>]+)>", part)
            if found:
                return found.group(1)
    return None


def _search(expr: Expression | None, doc: Any, what: str) -> Any:
    if expr is None:
        return doc
    try:
        return expr.search(doc)
    except MappingError as exc:
        raise PermanentError(f"{what}: {exc}") from None


def poll(system: str, client: HttpClient, cfg: PollConfig, watermark: str | None) -> PollResult:
    """Run one poll of ``cfg``: every page up to ``max_records``, the records with their dedup keys, and the
    watermark for the next poll (the stored one when nothing new was seen)."""
    what = f"{system}.{cfg.name}"
    mark = watermark or cfg.initial
    paging = cfg.paging
    kind = paging.get("type", "none")
    size = int(paging.get("size", 100))
    position = int(paging.get("start", 1 if kind == "page" else 0))
    cursor: str | None = None
    next_url: str | None = None
    records: list[tuple[str, Any]] = []
    stamps: list[Any] = []
    header_mark: str | None = None
    cursor_mark: Any = None
    for number in range(int(paging.get("max_pages", 100))):
        context = {"watermark": mark, "offset": position, "page": position, "cursor": cursor, "limit": size}
        if next_url is not None:
            response = client.request("GET", next_url, what=f"{what} (next page)")
        else:
            query = _odata_query(cfg, mark) if cfg.odata is not None else {}
            for name, template in cfg.query.items():
                if mark is None and "watermark" in template.fields:
                    continue  # no watermark yet: ask for everything
                query[name] = template.render(context)
            if kind in ("offset", "page"):
                query[str(paging["param"])] = str(position)
            if kind == "cursor" and cursor is not None:
                query[str(paging["param"])] = cursor
            if paging.get("size_param"):
                query[str(paging["size_param"])] = str(size)
            body = ({k: t.render(context) for k, t in cfg.body.items()
                     if mark is not None or "watermark" not in t.fields} if cfg.method == "POST" else None)
            # spaces as %20 and OData punctuation literal: OData servers read a "+" in $filter as a plus sign
            target = cfg.path.render(context) + ("?" + urlencode(query, quote_via=quote, safe="$,'():/@")
                                                  if query else "")
            if body is not None:
                response = client.request(cfg.method, target, json=body, what=what)
            else:
                response = client.request(cfg.method, target, what=what)
        try:
            page = response.json()
        except ValueError:
            raise PermanentError(f"{what}: the answer is not JSON") from None
        found = _search(cfg.records, page, f"{what}: records")
        if found is None:
            found = []
        if not isinstance(found, list):
            raise PermanentError(f"{what}: 'records' found a {type(found).__name__}, not a list of records")
        for record in found:
            key = _search(cfg.key, record, f"{what}: key") if cfg.key is not None else None
            if key is None:
                key = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
            version = _stamp(_search(cfg.version, record, f"{what}: version")) if cfg.version else None
            stamp = _stamp(_search(cfg.mark_field, record, f"{what}: watermark")) if cfg.mark_field else None
            records.append((f"{key}@{version}" if version is not None else str(key), record))
            stamps.append(stamp)
        if number == 0 and cfg.mark_header:
            header_mark = response.header(cfg.mark_header)
        if cfg.mark_cursor is not None:
            cursor_mark = _search(cfg.mark_cursor, page, f"{what}: watermark cursor") or cursor_mark
        if len(records) >= cfg.max_records or not found:
            break
        if kind in ("offset", "page"):
            if len(found) < size:
                break
            position += len(found) if kind == "offset" else 1
        elif kind == "cursor":
            cursor = _search(cfg.next, page, f"{what}: paging.next")
            if not cursor:
                break
            cursor = str(cursor)
        elif kind == "next_link":
            link = (_link_next(response) if paging.get("link_header")
                    else _search(cfg.next, page, f"{what}: paging.next"))
            if not link:
                break
            next_url = str(link)
        else:
            break
    records = records[: cfg.max_records]
    newest: Any = None
    for stamp in stamps[: cfg.max_records]:
        if stamp is not None and (newest is None or _newer(stamp, newest)):
            newest = stamp
    new_mark: Any = watermark
    if cfg.mark_field is not None and newest is not None and (mark is None or _newer(newest, mark)):
        new_mark = newest
    elif cfg.mark_header and header_mark:
        new_mark = header_mark
    elif cfg.mark_cursor is not None and cursor_mark:
        new_mark = cursor_mark
    return PollResult(records=records, watermark=None if new_mark is None else str(new_mark))
