"""A small but real ERPNext (Frappe) on the wire, over in-memory documents.

What it holds to, from Frappe's REST docs and ``frappe/api``, ``frappe/model/document.py``,
``erpnext/controllers/accounts_controller.py``:

* ``Authorization: token <key>:<secret>``, else 401 ``AuthenticationError``;
* ``GET /api/resource/<doctype>`` with ``fields``/``filters`` (JSON), ``order_by``, ``limit_start``,
  ``limit_page_length`` (default 20) -> ``{"data": [...]}``, parent fields only; ``GET .../<name>`` the whole
  document with child tables; ``POST`` insert; ``PUT`` update (``modified`` older than the stored one:
  417 ``TimestampMismatchError``);
* docstatus: 0 draft, 1 submitted (frozen: ``UpdateAfterSubmitError``), 2 cancelled; ``frappe.client.submit``
  and ``frappe.client.cancel``; an amendment (``amended_from``) of a cancelled document is named ``<name>-1``;
  ``update_child_qty_rate`` ("Update Items") changes a submitted order's rows in place;
* errors as ``{exc_type, exception, exc, _server_messages}`` with Frappe's statuses (417 validation, 404
  DoesNotExistError, 409 DuplicateEntryError, 403 PermissionError);
* ``modified`` stamped ``YYYY-MM-DD HH:MM:SS.ffffff`` on every save.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers.jsonserver import Answer, JsonServer, Seen, json_answer

STATUS = {"ValidationError": 417, "MandatoryError": 417, "LinkValidationError": 417, "TimestampMismatchError": 417,
          "UpdateAfterSubmitError": 417, "DocstatusTransitionError": 417, "DoesNotExistError": 404,
          "DuplicateEntryError": 409, "PermissionError": 403, "AuthenticationError": 401, "QueryDeadlockError": 500,
          "CannotChangeConstantError": 417}
TRANSACTIONS = {"Sales Order": ("SAL-ORD", "customer", "delivery_date"),
                "Purchase Order": ("PUR-ORD", "supplier", "schedule_date"),
                "Material Request": ("MAT-MR", None, "schedule_date")}
MASTERS = {"Customer": "customer_name", "Supplier": "supplier_name", "Item": "item_code"}
ALLOWED_ON_SUBMIT = {"modified", "docstatus"}


class FrappeError(Exception):
    def __init__(self, exc_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.exc_type, self.message = exc_type, message
        self.status = status or STATUS.get(exc_type, 500)

    def body(self) -> dict[str, Any]:
        return {"exc_type": self.exc_type, "exception": f"frappe.exceptions.{self.exc_type}: {self.message}",
                "exc": json.dumps([f"Traceback (most recent call last):\nfrappe.exceptions.{self.exc_type}: "
                                   f"{self.message}\n"]),
                "_server_messages": json.dumps([json.dumps({"message": self.message, "title": "Message",
                                                            "indicator": "red", "raise_exception": 1})])}


class FakeFrappe(JsonServer):
    def __init__(self, *, api_key: str = "a1b2c3d4e5f6a7b", api_secret: str = "0f9e8d7c6b5a4f3") -> None:
        super().__init__()
        self.token = f"token {api_key}:{api_secret}"
        self.docs: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in [*TRANSACTIONS, *MASTERS, "Comment"]}
        self.counters: dict[str, int] = {}
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        #: False: Customers/Suppliers are named by their customer_name/supplier_name (ERPNext's default
        #: "Customer Naming By: Customer Name"), whatever name the request asks for
        self.names_by_prompt = True
        #: (doctype or method path, HTTP method or "*") -> error raised until removed
        self.faults: dict[tuple[str, str], FrappeError] = {}

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%d %H:%M:%S.%f")

    def set_clock(self, when: str) -> None:
        fixed = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        self.clock = lambda: fixed

    def tick(self, seconds: float = 1.0) -> None:
        current = self.clock() + timedelta(seconds=seconds)
        self.clock = lambda: current

    def add(self, doctype: str, **values: Any) -> dict[str, Any]:
        with self.lock:
            return self._insert(doctype, values)

    def doc(self, doctype: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.docs[doctype][name])

    # -- HTTP ----------------------------------------------------------------------------------------------
    def handle(self, request: Seen) -> Answer:
        if request.headers.get("authorization") != self.token:
            return self._error(FrappeError("AuthenticationError", "Invalid Request", 401))
        try:
            with self.lock:
                target = (request.path.split("/")[3] if request.path.startswith("/api/resource/")
                          else request.path[len("/api/method/"):])
                for key in ((target, request.method), (target, "*")):
                    if key in self.faults:
                        raise self.faults[key]
                if request.path.startswith("/api/resource/"):
                    return json_answer(200, {"data": self._resource(request)})
                if request.path.startswith("/api/method/"):
                    return json_answer(200, {"message": self._method(request.path[len("/api/method/"):], request)})
        except FrappeError as exc:
            return self._error(exc)
        return self._error(FrappeError("DoesNotExistError", "Page not found", 404))

    @staticmethod
    def _error(exc: FrappeError) -> Answer:
        return json_answer(exc.status, exc.body())

    def _resource(self, request: Seen) -> Any:
        parts = request.path.split("/")[3:]
        doctype = parts[0]
        if doctype not in self.docs:
            raise FrappeError("DoesNotExistError", f"DocType {doctype} not found")
        if len(parts) == 1 and request.method == "GET":
            return self._list(doctype, request.query)
        if len(parts) == 1 and request.method == "POST":
            return self._insert(doctype, request.json())
        name = parts[1]
        if name not in self.docs[doctype]:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        if request.method == "GET":
            return copy.deepcopy(self.docs[doctype][name])
        if request.method == "PUT":
            return self._update(doctype, name, request.json())
        raise FrappeError("PermissionError", "Not permitted", 403)

    def _match(self, doc: dict[str, Any], filters: Any) -> bool:
        terms = [[k, "=", v] for k, v in filters.items()] if isinstance(filters, dict) else filters
        for term in terms:
            field, op, value = term[-3:]
            have = doc.get(field)
            if not _compare(have, op, value):
                return False
        return True

    def _list(self, doctype: str, query: dict[str, str]) -> list[dict[str, Any]]:
        fields = json.loads(query.get("fields") or '["name"]')
        filters = json.loads(query.get("filters") or "[]")
        rows = [d for d in self.docs[doctype].values() if self._match(d, filters)]
        for part in reversed((query.get("order_by") or "modified desc").split(",")):
            name, _, direction = part.strip().partition(" ")
            rows.sort(key=lambda d, n=name: str(d.get(n) or ""), reverse=direction.lower() == "desc")  # type: ignore[misc]
        start = int(query.get("limit_start") or 0)
        length = int(query.get("limit_page_length") or 20)
        unknown = [f for f in fields if rows and f not in rows[0] and f != "*"]
        if unknown:
            raise FrappeError("DataError", f"Field not permitted in query: {unknown[0]}", 417)
        return [{f: d.get(f) for f in fields} if fields != ["*"] else
                {k: v for k, v in d.items() if not isinstance(v, list)} for d in rows[start:start + length]]

    # -- documents -----------------------------------------------------------------------------------------
    def _check(self, doctype: str, doc: dict[str, Any]) -> None:
        if doctype in TRANSACTIONS:
            _, party, date_field = TRANSACTIONS[doctype]
            if party and not doc.get(party):
                raise FrappeError("MandatoryError", f"[{doctype}, {doc.get('name')}]: {party}")
            if party and doc[party] not in self.docs["Customer" if party == "customer" else "Supplier"]:
                raise FrappeError("LinkValidationError", f"Could not find {party.title()}: {doc[party]}")
            if not doc.get("items"):
                raise FrappeError("MandatoryError", f"[{doctype}, {doc.get('name')}]: items")
            for row in doc["items"]:
                if row.get("item_code") not in self.docs["Item"]:
                    raise FrappeError("LinkValidationError", f"Could not find Row #{row.get('idx')}: Item Code: "
                                      f"{row.get('item_code')}")
                if not row.get(date_field) and not doc.get(date_field):
                    raise FrappeError("ValidationError", f"Row #{row.get('idx')}: {date_field} is mandatory")
                if float(row.get("qty") or 0) <= 0:
                    raise FrappeError("ValidationError", f"Row #{row.get('idx')}: Quantity must be greater than 0")

    @staticmethod
    def _totals(doc: dict[str, Any]) -> None:
        doc["total_qty"] = sum(float(r["qty"]) for r in doc["items"])
        doc["total"] = doc["grand_total"] = round(sum(r["amount"] for r in doc["items"]), 2)

    def _rows(self, doctype: str, parent: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        date_field = TRANSACTIONS[doctype][2]
        out = []
        for idx, row in enumerate(rows, start=1):
            self.counters["row"] = self.counters.get("row", 0) + 1
            # Frappe names child rows with a random 10-character hash; a counter keeps tests repeatable.
            new = {"name": row.get("name") or f"{self.counters['row'] * 2654435761 % 16**10:010x}", "idx": idx,
                   "parent": parent["name"],
                   "parenttype": doctype, "parentfield": "items", "uom": "Nos", "conversion_factor": 1.0,
                   "rate": 0.0, "delivered_qty": 0.0, "received_qty": 0.0, **row}
            new.setdefault(date_field, parent.get(date_field))
            new["amount"] = round(float(new["qty"]) * float(new["rate"]), 2)
            out.append(new)
        return out

    def _insert(self, doctype: str, values: dict[str, Any]) -> dict[str, Any]:
        doc = dict(values)
        doc.pop("doctype", None)
        docstatus = int(doc.pop("docstatus", 0) or 0)
        if doctype in TRANSACTIONS:
            if doc.get("amended_from"):
                base = doc["amended_from"]
                original = self.docs[doctype].get(base)
                if original is None or original["docstatus"] != 2:
                    raise FrappeError("ValidationError", f"Amended From {base} is not a cancelled document")
                root, _, n = base.rpartition("-")
                name = f"{root}-{int(n) + 1}" if original.get("amended_from") and n.isdigit() else f"{base}-1"
            else:
                key = TRANSACTIONS[doctype][0]
                self.counters[key] = self.counters.get(key, 0) + 1
                name = f"{key}-{self.clock().year}-{self.counters[key]:05d}"
            doc["name"] = name
            doc["items"] = self._rows(doctype, doc, list(doc.get("items") or []))
            self._check(doctype, doc)
            self._totals(doc)
            doc.setdefault("status", "Draft")
        elif doctype == "Comment":
            self.counters["Comment"] = self.counters.get("Comment", 0) + 1
            doc["name"] = name = f"{self.counters['Comment']:010x}"
        else:
            asked = doc.pop("__newname", None)
            name = str((asked if self.names_by_prompt else None) or doc.get(MASTERS[doctype]) or "")
            if not name:
                raise FrappeError("MandatoryError", f"[{doctype}]: {MASTERS[doctype]}")
            if name in self.docs[doctype]:
                raise FrappeError("DuplicateEntryError", f"{doctype} {name} already exists", 409)
            doc["name"] = name
        now = self.now()
        doc.update(docstatus=0, creation=now, modified=now, owner="bot@example.com", modified_by="bot@example.com")
        self.docs[doctype][doc["name"]] = doc
        if docstatus == 1:
            self._submit(doctype, doc)
        return copy.deepcopy(doc)

    def _update(self, doctype: str, name: str, values: dict[str, Any]) -> dict[str, Any]:
        doc = self.docs[doctype][name]
        if values.get("modified") and values["modified"] != doc["modified"]:
            raise FrappeError("TimestampMismatchError", "Error: Document has been modified after you have opened it "
                              f"({values['modified']}, {doc['modified']}). Please refresh to get the latest document.")
        target = values.get("docstatus", doc["docstatus"])
        if doc["docstatus"] == 2:
            raise FrappeError("ValidationError", "Cannot edit cancelled document")
        if doc["docstatus"] == 1:
            changed = {k for k, v in values.items() if doc.get(k) != v} - ALLOWED_ON_SUBMIT
            if changed:
                raise FrappeError("UpdateAfterSubmitError", f"Not allowed to change {sorted(changed)[0]} after "
                                  "submission")
            if target == 2:
                return self._cancel(doctype, doc)
            return copy.deepcopy(doc)
        merged = {**doc, **{k: v for k, v in values.items() if k not in ("docstatus", "modified", "name")}}
        if doctype in TRANSACTIONS and "items" in values:
            merged["items"] = self._rows(doctype, merged, list(values["items"]))
            self._check(doctype, merged)
            self._totals(merged)
        merged["modified"] = self.now()
        self.docs[doctype][name] = merged
        if target == 1:
            self._submit(doctype, merged)
        return copy.deepcopy(merged)

    def _submit(self, doctype: str, doc: dict[str, Any]) -> dict[str, Any]:
        if doc["docstatus"] != 0:
            raise FrappeError("DocstatusTransitionError", f"Cannot change docstatus from {doc['docstatus']} to 1")
        doc.update(docstatus=1, status="To Deliver and Bill" if doctype == "Sales Order" else "To Receive and Bill"
                   if doctype == "Purchase Order" else "Pending", modified=self.now())
        return copy.deepcopy(doc)

    def _cancel(self, doctype: str, doc: dict[str, Any]) -> dict[str, Any]:
        if doc["docstatus"] != 1:
            raise FrappeError("DocstatusTransitionError", f"Cannot change docstatus from {doc['docstatus']} to 2")
        doc.update(docstatus=2, status="Cancelled", modified=self.now())
        return copy.deepcopy(doc)

    # -- methods -------------------------------------------------------------------------------------------
    def _method(self, path: str, request: Seen) -> Any:
        args = request.json() if request.body else dict(request.query)
        if path == "frappe.auth.get_logged_user":
            return "bot@example.com"
        if path == "frappe.client.submit":
            sent = json.loads(args["doc"]) if isinstance(args.get("doc"), str) else args["doc"]
            doc = self.docs[sent["doctype"]].get(sent["name"])
            if doc is None:
                raise FrappeError("DoesNotExistError", f"{sent['doctype']} {sent['name']} not found")
            if sent.get("modified") and sent["modified"] != doc["modified"]:
                raise FrappeError("TimestampMismatchError", "Document has been modified after you have opened it")
            return self._submit(sent["doctype"], doc)
        if path == "frappe.client.cancel":
            doc = self.docs[args["doctype"]].get(args["name"])
            if doc is None:
                raise FrappeError("DoesNotExistError", f"{args['doctype']} {args['name']} not found")
            self._cancel(args["doctype"], doc)
            return None
        if path == "erpnext.controllers.accounts_controller.update_child_qty_rate":
            return self._update_items(args)
        raise FrappeError("DoesNotExistError", f"Method {path} not found", 404)

    def _update_items(self, args: dict[str, Any]) -> None:
        doctype, name = args["parent_doctype"], args["parent_doctype_name"]
        doc = self.docs[doctype].get(name)
        if doc is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        if doc["docstatus"] != 1:
            raise FrappeError("ValidationError", "Update Items works on submitted documents only")
        wanted = json.loads(args["trans_items"])
        by_name = {r["name"]: r for r in doc["items"]}
        keep = {w.get("docname") for w in wanted if w.get("docname")}
        for row in doc["items"]:
            if row["name"] not in keep and (row.get("delivered_qty") or row.get("received_qty")):
                raise FrappeError("ValidationError", f"Row #{row['idx']}: Cannot delete item {row['item_code']} "
                                  "which has already been delivered")
        rows = []
        for entry in wanted:
            if entry.get("docname"):
                if entry["docname"] not in by_name:
                    raise FrappeError("ValidationError", f"Row {entry['docname']} not found")
                row = dict(by_name[entry["docname"]])
                if float(entry["qty"]) < float(row.get("delivered_qty") or 0):
                    raise FrappeError("ValidationError", f"Row #{row['idx']}: Cannot set quantity less than "
                                      "delivered quantity")
                row.update({k: v for k, v in entry.items() if k != "docname"})
                rows.append(row)
            else:
                rows.append({k: v for k, v in entry.items() if k != "docname"})
        doc["items"] = self._rows(doctype, doc, rows)
        self._check(doctype, doc)
        self._totals(doc)
        doc["modified"] = self.now()


def _compare(have: Any, op: str, value: Any) -> bool:
    if op == "=":
        return bool(have == value)
    if op == "!=":
        return bool(have != value)
    if op == "in":
        return have in (value or [])
    if op == "like":
        return isinstance(have, str) and str(value).strip("%") in have
    if op in (">", ">=", "<", "<="):
        if have is None:
            return False
        return bool({">": have > value, ">=": have >= value, "<": have < value, "<=": have <= value}[op])
    raise FrappeError("ValidationError", f"Operator {op} not supported")
