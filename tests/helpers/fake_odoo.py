"""A small but real Odoo on the wire: the JSON-2 API (Odoo 19) and ``/jsonrpc`` over an in-memory ORM.

What it holds to, from Odoo's docs (``external_api.rst``, External JSON-2 API) and ``odoo/http.py``:

* JSON-2: ``POST /json/2/<model>/<method>``, ``Authorization: bearer <key>`` (401 with the documented
  ``werkzeug.exceptions.Unauthorized`` body otherwise), ``X-Odoo-Database`` naming a database it hosts,
  ``Content-Type: application/json``; named arguments in the body, the bare return value as the answer;
  errors as real statuses with ``{name, message, arguments, context, debug}`` (UserError/ValidationError 422,
  AccessError 403, MissingError 404, other exceptions 500).
* JSON-RPC: ``common.version``, ``common.authenticate``, ``object.execute_kw``; errors as HTTP 200 with
  ``{"error": {"code": 200, "message": "Odoo Server Error", "data": {...}}}``.
* ORM: ``search_read``/``search``/``search_count``/``read``/``create``/``write``/``unlink`` with domains
  (prefix ``|``/``&``/``!``), ``offset``/``limit``/``order``; many2one read as ``[id, display_name]``, empty
  values as ``false``; x2many commands 0/1/2/5/6; ``write_date`` stamped ``YYYY-MM-DD HH:MM:SS`` UTC from the
  server clock on every change (the order's too when its lines change through it).
* Buttons: ``sale.order.action_confirm``/``action_cancel``, ``purchase.order.button_confirm``/``button_cancel``
  with Odoo's state rules (a confirmed order's line cannot be deleted).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers.jsonserver import Answer, JsonServer, Seen, json_answer

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "odoo"

M2O = {"partner_id": "res.partner", "product_id": "product.product", "order_id": None, "currency_id": None,
       "uom_id": None, "product_uom": None, "country_id": None}
#: display names of the records this fake does not model (company currency, the default unit)
LABELS = {"currency_id": "EUR", "uom_id": "Units", "product_uom": "Units", "country_id": "Belgium"}
MODELS: dict[str, dict[str, Any]] = {
    "res.partner": {"defaults": {"ref": False, "is_company": False, "email": False, "phone": False, "vat": False,
                                 "street": False, "zip": False, "city": False, "country_id": False,
                                 "customer_rank": 0, "supplier_rank": 0, "active": True}, "required": ["name"]},
    "product.product": {"defaults": {"default_code": False, "barcode": False, "type": "consu", "uom_id": 1,
                                     "list_price": 1.0, "standard_price": 0.0, "active": True}, "required": ["name"]},
    "sale.order": {"defaults": {"state": "draft", "client_order_ref": False, "origin": False, "commitment_date": False,
                                "validity_date": False, "currency_id": 1, "note": False, "amount_untaxed": 0.0,
                                "amount_total": 0.0}, "required": ["partner_id"], "lines": "sale.order.line",
                   "prefix": "S"},
    "sale.order.line": {"defaults": {"sequence": 10, "price_unit": 0.0, "price_subtotal": 0.0, "product_uom": 1,
                                     "qty_delivered": 0.0},
                        "required": ["order_id", "product_id"], "qty": "product_uom_qty"},
    "purchase.order": {"defaults": {"state": "draft", "partner_ref": False, "origin": False, "date_approve": False,
                                    "date_planned": False, "currency_id": 1, "notes": False, "amount_untaxed": 0.0,
                                    "amount_total": 0.0}, "required": ["partner_id"], "lines": "purchase.order.line",
                       "prefix": "P"},
    "purchase.order.line": {"defaults": {"sequence": 10, "price_unit": 0.0, "price_subtotal": 0.0, "product_uom": 1,
                                         "qty_received": 0.0, "date_planned": False},
                            "required": ["order_id", "product_id"], "qty": "product_qty"},
}
ORM_METHODS = {"search_read", "search", "search_count", "read", "create", "write", "unlink", "name_search"}
BUTTONS = {("sale.order", "action_confirm"), ("sale.order", "action_cancel"), ("purchase.order", "button_confirm"),
           ("purchase.order", "button_cancel")}


class OdooError(Exception):
    def __init__(self, name: str, message: str, status: int) -> None:
        super().__init__(message)
        self.name, self.message, self.status = name, message, status

    def body(self, context: dict[str, Any]) -> dict[str, Any]:
        return {"name": self.name, "message": self.message, "arguments": [self.message], "context": context,
                "debug": "Traceback (most recent call last):\n  File \"/opt/odoo/odoo/service/model.py\"\n"
                         f"{self.name}: {self.message}\n"}


def user_error(message: str) -> OdooError:
    return OdooError("odoo.exceptions.UserError", message, 422)


def validation_error(message: str) -> OdooError:
    return OdooError("odoo.exceptions.ValidationError", message, 422)


def missing_error(model: str, ids: Any) -> OdooError:
    return OdooError("odoo.exceptions.MissingError", f"Record does not exist or has been deleted.\n(Record: {model}"
                     f"({ids}), User: 2)", 404)


class FakeOdoo(JsonServer):
    def __init__(self, *, api_key: str = "odoo-test-key-0001", database: str = "acme", login: str = "bot",
                 databases: tuple[str, ...] = ("acme", "other"), version: str = "19.0") -> None:
        super().__init__()
        self.api_key, self.database, self.login = api_key, database, login
        self.databases, self.version = databases, version
        self.records: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in MODELS}
        self.next_id: dict[str, int] = {m: 1 for m in MODELS}
        self.sequence = {"S": 0, "P": 0}
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        #: (model, method) -> error raised on every call until removed; "*" matches any method
        self.faults: dict[tuple[str, str], OdooError] = {}

    # -- test conveniences ---------------------------------------------------------------------------------
    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%d %H:%M:%S")

    def set_clock(self, when: str) -> None:
        fixed = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        self.clock = lambda: fixed

    def tick(self, seconds: float = 1.0) -> None:
        current = self.clock() + timedelta(seconds=seconds)
        self.clock = lambda: current

    def add(self, model: str, **values: Any) -> int:
        with self.lock:
            return self._make(model, [values])[0]

    def get(self, model: str, rid: int) -> dict[str, Any]:
        with self.lock:
            return dict(self.records[model][rid])

    def find(self, model: str, **equal: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.records[model].values() if all(r.get(k) == v for k, v in equal.items())]

    # -- HTTP ----------------------------------------------------------------------------------------------
    def handle(self, request: Seen) -> Answer:
        if request.method == "GET" and request.path == "/web/version":
            return json_answer(200, {"version_info": [19, 0, 0, "final", 0, ""], "version": self.version})
        if request.path == "/jsonrpc" and request.method == "POST":
            return self._jsonrpc(request)
        if request.path.startswith("/json/2/") and request.method == "POST":
            return self._json2(request)
        return json_answer(404, OdooError("werkzeug.exceptions.NotFound", "The requested URL was not found on the "
                                          "server.", 404).body({}))

    def _json2(self, request: Seen) -> Answer:
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or key != self.api_key:
            return json_answer(401, json.loads((SAMPLES / "json2_error_401_invalid_apikey_odoo_docs.json").read_text()),
                               {"WWW-Authenticate": 'Bearer realm="", error_description="Invalid apikey"'})
        database = request.headers.get("x-odoo-database")
        if database is None and len(self.databases) > 1 or database not in (None, self.database):
            return json_answer(404, OdooError("werkzeug.exceptions.NotFound", "The requested URL was not found on "
                                              "the server.", 404).body({}))
        if not request.headers.get("content-type", "").startswith("application/json"):
            refused = OdooError("werkzeug.exceptions.BadRequest", "State-changing json2 requests must use the "
                                "'application/json' Content-Type (CSRF protection).", 400)
            return json_answer(400, refused.body({}))
        try:
            params = json.loads(request.body or b"{}")
        except ValueError as exc:
            return json_answer(400, OdooError("werkzeug.exceptions.BadRequest", f"could not parse the body as json: "
                                              f"{exc}", 400).body({}))
        parts = request.path.split("/")
        if len(parts) != 5 or not isinstance(params, dict):
            return json_answer(404, OdooError("werkzeug.exceptions.NotFound", "not found", 404).body({}))
        model, method = parts[3], parts[4]
        context = params.pop("context", {}) or {}
        ids = params.pop("ids", None)
        try:
            return json_answer(200, self.execute(model, method, ids, params))
        except OdooError as exc:
            return json_answer(exc.status, exc.body(context))

    def _jsonrpc(self, request: Seen) -> Answer:
        doc = json.loads(request.body or b"{}")
        rid = doc.get("id")
        params = doc.get("params") or {}
        service, method, args = params.get("service"), params.get("method"), params.get("args") or []
        try:
            if service == "common" and method == "version":
                result: Any = {"server_version": self.version, "server_version_info": [18, 0, 0, "final", 0, ""],
                               "server_serie": self.version, "protocol_version": 1}
            elif service == "common" and method in ("authenticate", "login"):
                db, login, key = args[0], args[1], args[2]
                result = 2 if (db == self.database and login == self.login and key == self.api_key) else False
            elif service == "object" and method == "execute_kw":
                db, uid, key, model, meth = args[:5]
                positional = args[5] if len(args) > 5 else []
                kwargs = dict(args[6]) if len(args) > 6 else {}
                if db != self.database or uid != 2 or key != self.api_key:
                    raise OdooError("odoo.exceptions.AccessDenied", "Access Denied", 403)
                kwargs.pop("context", None)
                ids = positional[0] if positional else None
                result = self.execute(model, meth, ids, kwargs)
            else:
                raise OdooError("builtins.NameError", f"{service}.{method} is not a service method", 500)
        except OdooError as exc:
            return json_answer(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": 200, "message": "Odoo Server Error",
                                                                              "data": exc.body({})}})
        return json_answer(200, {"jsonrpc": "2.0", "id": rid, "result": result})

    # -- the ORM ---------------------------------------------------------------------------------------------
    def execute(self, model: str, method: str, ids: Any, params: dict[str, Any]) -> Any:
        with self.lock:
            fault = self.faults.get((model, method)) or self.faults.get((model, "*"))
            if fault is not None:
                raise fault
            if model not in MODELS:
                raise OdooError("werkzeug.exceptions.NotFound", f"Model {model!r} does not exist", 404)
            if method not in ORM_METHODS and (model, method) not in BUTTONS:
                raise OdooError("werkzeug.exceptions.NotFound", f"Method {model}.{method} not found", 404)
            try:
                return getattr(self, "_" + method if method in ORM_METHODS else "_button")(model, method, ids, **params)
            except TypeError as exc:
                raise OdooError("werkzeug.exceptions.UnprocessableEntity", str(exc), 422) from None

    def _ids(self, model: str, ids: Any) -> list[int]:
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise OdooError("werkzeug.exceptions.UnprocessableEntity", "ids must be a list of integers", 422)
        missing = [i for i in ids if i not in self.records[model]]
        if missing:
            raise missing_error(model, missing)
        return ids

    def _match(self, model: str, row: dict[str, Any], domain: list[Any]) -> bool:
        stack: list[bool] = []
        for term in reversed(domain):
            if term == "|":
                stack.append(stack.pop() | stack.pop())
            elif term == "&":
                stack.append(stack.pop() & stack.pop())
            elif term == "!":
                stack.append(not stack.pop())
            else:
                stack.append(self._term(model, row, term))
        return all(stack)

    def _term(self, model: str, row: dict[str, Any], term: list[Any]) -> bool:
        field, op, value = term
        if field not in row and field not in ("id",):
            raise OdooError("builtins.ValueError", f"Invalid field {model}.{field} in leaf {tuple(term)}", 500)
        have = row.get(field)
        if op in ("=", "!=") and value is False:
            return (have in (False, None)) == (op == "=")
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a is not False and a > b,
            ">=": lambda a, b: a is not False and a >= b, "<": lambda a, b: a is not False and a < b,
            "<=": lambda a, b: a is not False and a <= b, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
            "=like": lambda a, b: isinstance(a, str) and fnmatch.fnmatchcase(a, b.replace("%", "*").replace("_", "?")),
            "ilike": lambda a, b: isinstance(a, str) and b.strip("%").lower() in a.lower(),
            "like": lambda a, b: isinstance(a, str) and b.strip("%") in a,
        }
        if op not in ops:
            raise OdooError("builtins.ValueError", f"Invalid leaf {tuple(term)}", 500)
        return ops[op](have, value)

    def _search(self, model: str, _method: str, _ids: Any, domain: list[Any] | None = None, offset: int = 0,
                limit: int | None = None, order: str | None = None) -> list[int]:
        rows = [r for r in self.records[model].values() if self._match(model, r, list(domain or []))]
        for part in reversed([p.strip() for p in (order or "id asc").split(",")]):
            name, _, direction = part.partition(" ")
            rows.sort(key=lambda r, n=name: (r.get(n) is False, r.get(n) or 0),  # type: ignore[misc]
                      reverse=direction.strip().lower() == "desc")
        rows = rows[offset:]
        return [r["id"] for r in (rows[:limit] if limit else rows)]

    def _search_count(self, model: str, method: str, ids: Any, domain: list[Any] | None = None) -> int:
        return len(self._search(model, method, ids, domain))

    def _read(self, model: str, _method: str, ids: Any, fields: list[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for rid in self._ids(model, ids):
            row = self.records[model][rid]
            names = fields or list(row)
            unknown = [f for f in names if f not in row and f != "display_name"]
            if unknown:
                raise OdooError("builtins.ValueError", f"Invalid field {unknown[0]!r} on model {model!r}", 500)
            shown: dict[str, Any] = {"id": rid}
            for name in names:
                value = row.get(name, row.get("name"))
                target = model.removesuffix(".line") if name == "order_id" else M2O.get(name)
                if name in M2O and value not in (False, None):
                    known = target is not None and value in self.records[target]
                    label = self.records[target][value]["name"] if known and target else LABELS.get(name, str(value))
                    value = [value, label]
                shown[name] = value
            out.append(shown)
        return out

    def _search_read(self, model: str, method: str, ids: Any, domain: list[Any] | None = None,
                     fields: list[str] | None = None, offset: int = 0, limit: int | None = None,
                     order: str | None = None) -> list[dict[str, Any]]:
        return self._read(model, method, self._search(model, method, None, domain, offset, limit, order), fields)

    def _name_search(self, model: str, method: str, ids: Any, name: str = "", limit: int = 100) -> list[Any]:
        found = self._search(model, method, None, [["name", "ilike", name]], 0, limit)
        return [[i, self.records[model][i]["name"]] for i in found]

    def _check_links(self, model: str, values: dict[str, Any]) -> None:
        for field, target in M2O.items():
            if target and values.get(field) not in (None, False) and values[field] not in self.records[target]:
                raise missing_error(target, [values[field]])
        for field in values:
            if field not in MODELS[model]["defaults"] and field not in MODELS[model]["required"] and field not in (
                    "name", "order_line", MODELS[model].get("qty"), "date_order", "date_planned", "commitment_date"):
                raise OdooError("builtins.ValueError", f"Invalid field {field!r} on model {model!r}", 500)

    def _create(self, model: str, _method: str, _ids: Any, vals_list: list[dict[str, Any]] | None = None) -> list[int]:
        if not isinstance(vals_list, list) or not all(isinstance(v, dict) for v in vals_list):
            raise OdooError("werkzeug.exceptions.UnprocessableEntity", "vals_list must be a list of objects", 422)
        return self._make(model, vals_list)

    def _make(self, model: str, vals_list: list[dict[str, Any]]) -> list[int]:
        made = []
        for values in vals_list:
            values = dict(values)
            lines = values.pop("order_line", None)
            self._check_links(model, values)
            spec = MODELS[model]
            if "prefix" in spec and not values.get("name"):
                self.sequence[spec["prefix"]] += 1
                values["name"] = f"{spec['prefix']}{self.sequence[spec['prefix']]:05d}"
            missing = [f for f in spec["required"] if values.get(f) in (None, False, "")]
            if missing:
                raise validation_error(f"The operation cannot be completed:\n- Create/update: a mandatory field is not "
                                       f"set.\n- Field: {missing[0]} (model: {model})")
            rid = self.next_id[model]
            self.next_id[model] += 1
            now = self.now()
            row = {**spec["defaults"], **values, "id": rid, "create_date": now, "write_date": now}
            if "lines" in spec:
                row["order_line"] = []
                row.setdefault("date_order", now)
            if model.endswith(".line"):
                product = self.records["product.product"][row["product_id"]]
                row.setdefault("name", product["name"])
                row.setdefault(spec["qty"], 1.0)
            self.records[model][rid] = row
            if lines:
                self._lines(model, row, lines)
            made.append(rid)
        return made

    def _lines(self, model: str, order: dict[str, Any], commands: list[Any]) -> None:
        line_model = MODELS[model]["lines"]
        confirmed = order["state"] not in ("draft", "sent")
        for command in commands:
            code = command[0]
            if code == 0:
                (new,) = self._make(line_model, [{**command[2], "order_id": order["id"]}])
                order["order_line"].append(new)
            elif code == 1:
                self._ids(line_model, [command[1]])
                self._check_links(line_model, command[2])
                self.records[line_model][command[1]].update(command[2], write_date=self.now())
            elif code in (2, 5):
                if confirmed:
                    raise user_error("Once a sales order is confirmed, you can't remove one of its lines (we need to "
                                     "track if something gets invoiced or delivered).\nSet the quantity to 0 instead.")
                for lid in [command[1]] if code == 2 else list(order["order_line"]):
                    self.records[line_model].pop(lid, None)
                    order["order_line"].remove(lid)
            else:
                raise OdooError("builtins.ValueError", f"Unsupported x2many command {command!r}", 500)
        qty = MODELS[line_model]["qty"]
        for lid in order["order_line"]:
            line = self.records[line_model][lid]
            line["price_subtotal"] = round(line[qty] * line["price_unit"], 2)
        total = sum(self.records[line_model][i]["price_subtotal"] for i in order["order_line"])
        order["amount_untaxed"] = order["amount_total"] = round(total, 2)

    def _write(self, model: str, _method: str, ids: Any, vals: dict[str, Any] | None = None) -> bool:
        vals = dict(vals or {})
        for rid in self._ids(model, ids):
            row = self.records[model][rid]
            lines = vals.pop("order_line", None)
            self._check_links(model, vals)
            if lines:
                self._lines(model, row, lines)
            row.update(vals, write_date=self.now())
        return True

    def _unlink(self, model: str, _method: str, ids: Any) -> bool:
        for rid in self._ids(model, ids):
            if self.records[model][rid].get("state") not in (None, "draft", "cancel"):
                raise user_error("You can not delete a sent quotation or a confirmed sales order. You must first "
                                 "cancel it.")
            del self.records[model][rid]
        return True

    def _button(self, model: str, method: str, ids: Any) -> bool:
        for rid in self._ids(model, ids):
            row = self.records[model][rid]
            if method in ("action_confirm", "button_confirm"):
                if row["state"] not in ("draft", "sent"):
                    raise user_error(f"Some orders are not in a state requiring confirmation. ({row['name']})")
                row["state"] = "sale" if model == "sale.order" else "purchase"
                if model == "purchase.order":
                    row["date_approve"] = self.now()
            else:
                if row["state"] == "done":
                    raise user_error(f"Unable to cancel this {model} ({row['name']}): it is locked.")
                row["state"] = "cancel"
            row["write_date"] = self.now()
        return True
