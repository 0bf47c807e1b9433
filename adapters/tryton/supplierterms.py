"""What a supplier's confirmation binds: once a supplier has confirmed an SRM purchase, may a change order still
reduce it?

A supplier's confirmation is recorded on the purchase itself, where a Tryton user sees it: a line of its comment
that says ``supplier confirmed`` (``record_supplier_confirmation`` and ``confirm_purchase`` write it, once per
confirmation; a clerk may type it too). Tryton's own 'confirmed' state is the buyer's, not the supplier's.

The supplier's terms are a setting (``confirmed_lines``): ``reducible`` (the default: a confirmed line is still
reduced by a purchase amendment, the change order) or ``firm`` (a confirmed line cannot go down). The ``procure``
target's ``args`` set it for every supplier; the payload's ``confirmed_lines`` (the shipped mapping takes it from
the value map ``supplier_confirmed_lines`` in routes.yaml) overrides it per supplier. A decrease or cancellation of
a firm, supplier-confirmed line is refused — the line keeps its quantity, and the refusal (reason
``supplier_confirmed``) and the quantity bought beyond the order travel on to the CRM and the customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Call, Outcome
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain
from adapters.tryton.payload import Payload
from adapters.tryton.sales import append_comment
from bus.errors import PermanentError

__all__ = ["MARK", "TERMS", "firm_refusal", "record_supplier_confirmation", "supplier_confirmed", "terms_of"]

MARK = "supplier confirmed"
TERMS = ("reducible", "firm")
DETAIL = "supplier confirmed, cannot reduce"


def terms_of(call: Call, payload: Mapping[str, Any]) -> str:
    """The supplier's terms for this request: the payload's ``confirmed_lines``, else the target's args, else
    ``reducible``."""
    value = payload.get("confirmed_lines") or call.args.get("confirmed_lines") or "reducible"
    if value not in TERMS:
        raise PermanentError(f"tryton.procure: 'confirmed_lines' must be one of {', '.join(TERMS)}, got {value!r}")
    return str(value)


def supplier_confirmed(client: TrytonClient, purchase: int) -> bool:
    """Whether the supplier's confirmation of ``purchase`` is recorded (a comment line that says so)."""
    comment = client.read("purchase.purchase", [purchase], ["comment"])[0].get("comment") or ""
    return any(MARK in line.lower() for line in comment.splitlines())


def firm_refusal(client: TrytonClient, line: Mapping[str, Any], quantity: float, terms: str) -> dict[str, Any] | None:
    """The refusal of a decrease to ``quantity`` on a confirmed purchase's ``line``, when the supplier confirmed
    it on firm terms; None when the change may go ahead."""
    kept = float(line["quantity"])
    if terms != "firm" or quantity >= kept - 1e-9 or not supplier_confirmed(client, int(line["purchase"])):
        return None
    return {"reason": "supplier_confirmed", "wanted": quantity, "kept": kept, "detail": DETAIL}


def record_supplier_confirmation(client: TrytonClient, call: Call) -> Outcome:
    """Record that the supplier confirmed a purchase (by ``purchase`` id, ``reference`` or ``number``), with the
    confirmation's id (``confirmation_id``) when given; once per delivery."""
    p = Payload("record_supplier_confirmation", call.payload)
    purchase = p.ref("purchase")
    if purchase is None:
        domain: list[Any]
        if p.has("number"):
            domain = [["number", "=", p.text("number")]]
        elif p.has("reference"):
            domain = [["reference", "=", p.text("reference")], ["state", "!=", "cancelled"]]
        else:
            raise PermanentError("tryton.record_supplier_confirmation: give 'purchase' (id), 'number' or 'reference'")
        found = client.search("purchase.purchase", domain, limit=1)
        if not found:
            raise PermanentError(f"tryton.record_supplier_confirmation: no purchase matches {domain}")
        purchase = found[0]
    confirmation = p.text("confirmation_id")
    written = append_comment(client, "purchase.purchase", purchase, call,
                             MARK + (f" ({confirmation})" if confirmation else ""))
    row = client.read("purchase.purchase", [purchase], ["number", "reference", "state"])[0]
    return Outcome(result=plain({"id": purchase, "number": row.get("number"), "reference": row.get("reference"),
                                 "state": row["state"], "supplier_confirmed": True, "written": written}),
                   reference=row.get("number") or str(purchase))
