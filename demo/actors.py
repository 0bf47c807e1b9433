"""What people do by hand in the three Tryton databases: a sales rep in the CRM, a supplier's clerk in the SRM.

The sales rep works through Tryton's JSON-RPC client (the same calls the Tryton desktop client makes): create a
sale, quote it, confirm it, or take a quotation back to draft to change a quantity — Tryton freezes the lines of
a confirmed sale, so quantities change while the sale is a quotation. The supplier's change of plan goes through
the adapter's ``update_purchase`` (it moves the purchase's incoming moves, as Tryton's users do).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.tryton import TrytonAdapter
from adapters.tryton.client import TrytonClient
from demo.masterdata import call

__all__ = ["CrmSale", "SalesRep", "Supplier"]


@dataclass(frozen=True)
class CrmSale:
    id: int
    number: str

    @property
    def order_id(self) -> str:
        """The canonical order id the bus gives this sale (see mappings/tryton_sale_to_order_changed.yaml)."""
        return f"SO-{self.number}"


class SalesRep:
    """A CRM user working on sales."""

    def __init__(self, client: TrytonClient) -> None:
        self.client = client

    def create_sale(self, customer: int, product: int, quantity: float, shipping_date: dt.date,
                    unit_price: str = "10.00", reference: str | None = None) -> CrmSale:
        address = self.client.search("party.address", [["party", "=", customer]], limit=1)[0]
        unit = self.client.read("product.product", [product], ["default_uom"])[0]["default_uom"]
        values: dict[str, Any] = {
            "party": customer, "invoice_address": address, "shipment_address": address,
            "shipping_date": shipping_date,
            "lines": [["create", [{"type": "line", "product": product, "quantity": float(quantity), "unit": unit,
                                   "unit_price": Decimal(unit_price)}]]]}
        if reference:
            values["reference"] = reference
        sale = self.client.create("sale.sale", [values])[0]
        number = self.client.read("sale.sale", [sale], ["number"])[0]["number"]
        # Tryton numbers a sale when it is quoted; before that the number is empty.
        self.quote(sale)
        number = self.client.read("sale.sale", [sale], ["number"])[0]["number"] or number
        return CrmSale(sale, str(number))

    def quote(self, sale: int) -> None:
        self.client.model("sale.sale", "quote", [sale])

    def confirm(self, sale: int) -> None:
        self.client.model("sale.sale", "confirm", [sale])

    def change_quantity(self, sale: int, quantity: float) -> None:
        """Back to draft, change the (single) line's quantity, quote again."""
        self.client.model("sale.sale", "draft", [sale])
        lines = self.client.search("sale.line", [["sale", "=", sale], ["type", "=", "line"]])
        self.client.write("sale.line", lines, {"quantity": float(quantity)})
        self.quote(sale)

    def create_order(self, customer: int, lines: dict[int, float], shipping_date: dt.date,
                     unit_price: str = "10.00") -> CrmSale:
        """A quotation with one line per product (``{product id: quantity}``)."""
        address = self.client.search("party.address", [["party", "=", customer]], limit=1)[0]
        units = {r["id"]: r["default_uom"] for r in self.client.read("product.product", list(lines),
                                                                    ["default_uom"])}
        sale = self.client.create("sale.sale", [{
            "party": customer, "invoice_address": address, "shipment_address": address,
            "shipping_date": shipping_date,
            "lines": [["create", [{"type": "line", "product": product, "quantity": float(quantity),
                                   "unit": units[product], "unit_price": Decimal(unit_price)}
                                  for product, quantity in lines.items()]]]}])[0]
        self.quote(sale)
        number = self.client.read("sale.sale", [sale], ["number"])[0]["number"]
        return CrmSale(sale, str(number))

    def change_lines(self, sale: int, quantities: dict[int, float]) -> str:
        """Set the quantity per product (0 removes the line's demand); returns how Tryton let the rep do it.

        A quotation goes back to draft (a product it lacks gets a new line); a confirmed sale is changed with a
        sale amendment (module ``sale_amendment``), which changes existing lines only, and a product it lacks goes
        on a supplementary sale (:meth:`supplement`)."""
        state = self.client.read("sale.sale", [sale], ["state"])[0]["state"]
        lines = self.client.search_read("sale.line", [["sale", "=", sale], ["type", "=", "line"]],
                                        ["product", "quantity", "unit", "unit_price", "description"])
        if state in ("draft", "quotation"):
            self.client.model("sale.sale", "draft", [sale])
            have = {line["product"]: line for line in lines}
            commands: list[Any] = []
            for product, quantity in quantities.items():
                if product in have and quantity <= 0:
                    commands.append(["delete", [have[product]["id"]]])
                elif product in have:
                    commands.append(["write", [have[product]["id"]], {"quantity": float(quantity)}])
                elif quantity > 0:
                    unit = self.client.read("product.product", [product], ["default_uom"])[0]["default_uom"]
                    commands.append(["create", [{"type": "line", "product": product, "quantity": float(quantity),
                                                 "unit": unit, "unit_price": lines[0]["unit_price"]}]])
            self.client.write("sale.sale", [sale], {"lines": commands})
            self.quote(sale)
            return "quotation edited"
        # The order is this sale and its supplementary sales (origin = this sale): amend the lines they have.
        members = [sale, *self.client.search("sale.sale", [["origin", "=", f"sale.sale,{sale}"],
                                                           ["state", "in", ["processing", "confirmed", "done"]]],
                                             order=[("id", "ASC")])]
        lines = self.client.search_read("sale.line", [["sale", "in", members], ["type", "=", "line"]],
                                        ["sale", "product", "quantity", "unit", "unit_price", "description"],
                                        order=[("sale", "ASC"), ("id", "ASC")])
        done: list[str] = []
        for member in members:
            changes = [{"action": "line", "line": line["id"], "product": line["product"],
                        "quantity": float(quantities[line["product"]]), "unit": line["unit"],
                        "unit_price": line["unit_price"], "description": line.get("description")}
                       for line in lines if line["sale"] == member and line["product"] in quantities
                       and float(line["quantity"]) != float(quantities[line["product"]])]
            if changes:
                amendment = self.client.create("sale.amendment", [{"sale": member, "description": "customer change",
                                                                   "lines": [["create", changes]]}])[0]
                self.client.model("sale.amendment", "validate_amendment", [amendment])
                if "amended" not in done:
                    done.append("amended")
        added = {product: qty for product, qty in quantities.items()
                 if qty > 0 and product not in {line["product"] for line in lines}}
        if added:
            self.supplement(sale, added, lines[0]["unit_price"] if lines else Decimal("10.00"))
            done.append("supplemented")
        return "+".join(done) or "unchanged"

    def supplement(self, sale: int, quantities: dict[int, float], unit_price: Decimal) -> int:
        """Products added to a confirmed order: an amendment cannot add a line, so they go on a supplementary sale
        whose origin is the order's sale (same customer, addresses and date), confirmed at once."""
        head = self.client.read("sale.sale", [sale], ["party", "invoice_address", "shipment_address",
                                                      "shipping_date", "reference"])[0]
        units = {r["id"]: r["default_uom"] for r in self.client.read("product.product", list(quantities),
                                                                    ["default_uom"])}
        extra = self.client.create("sale.sale", [{
            "party": head["party"], "invoice_address": head["invoice_address"],
            "shipment_address": head["shipment_address"], "shipping_date": head.get("shipping_date"),
            "reference": head.get("reference"), "origin": f"sale.sale,{sale}",
            "description": "added to a confirmed order",
            "lines": [["create", [{"type": "line", "product": product, "quantity": float(quantity),
                                   "unit": units[product], "unit_price": unit_price}
                                  for product, quantity in quantities.items()]]]}])[0]
        self.quote(extra)
        self.confirm(extra)
        return int(extra)

    def cancel(self, sale: int) -> None:
        """Cancel a quotation (Tryton cancels only sales that are not confirmed)."""
        self.client.model("sale.sale", "cancel", [sale])

    def set_contact(self, customer: int, email: str, language: str | None = None) -> None:
        """The customer's e-mail address (a contact mechanism) and language, as a CRM user records them."""
        self.client.create("party.contact_mechanism", [{"party": customer, "type": "email", "value": email}])
        if language:
            langs = self.client.search("ir.lang", [["code", "=", language]], limit=1)
            if not langs:
                raise LookupError(f"the CRM has no language {language!r}")
            self.client.write("party.party", [customer], {"lang": langs[0]})

    def read(self, sale: int) -> dict[str, Any]:
        return self.client.read("sale.sale", [sale], ["number", "state", "comment", "shipping_date"])[0]


class Supplier:
    """The supplier's side of a purchase in the SRM."""

    def __init__(self, srm: TrytonAdapter) -> None:
        self.srm = srm

    def purchases_for(self, order_id: str) -> list[dict[str, Any]]:
        """The purchases with a line serving ``order_id`` (a grouped purchase serves several orders)."""
        served = {line["purchase"] for line in self.srm.client.search_read(
            "purchase.line", [["note", "like", f"serves {order_id}/%"]], ["purchase"])}
        rows: list[dict[str, Any]] = self.srm.client.search_read(
            "purchase.purchase", [["id", "in", sorted(served)]],
            ["number", "reference", "state", "delivery_date", "comment"], order=[("id", "ASC")]) if served else []
        return rows

    def delivery_date(self, purchase: int) -> dt.date:
        """When the purchase's goods are due now (the latest line date; lines follow their incoming moves)."""
        rows = self.srm.client.search_read("purchase.line", [["purchase", "=", purchase], ["type", "=", "line"]],
                                           ["delivery_date"])
        dates = [r["delivery_date"] for r in rows if isinstance(r.get("delivery_date"), dt.date)]
        if not dates:
            raise LookupError(f"purchase {purchase} has no line with a delivery date")
        latest: dt.date = max(dates)
        return latest

    def delay(self, reference: str, new_date: dt.date) -> dict[str, Any]:
        result: dict[str, Any] = self.srm.call("update_purchase", call(
            {"reference": reference, "delivery_date": new_date.isoformat()})).result
        return result

    def purchases_serving(self, order_id: str) -> list[dict[str, Any]]:
        """Live purchase lines that serve ``order_id`` (their note names it), with their purchase."""
        rows: list[dict[str, Any]] = self.srm.client.search_read(
            "purchase.line", [["note", "like", f"serves {order_id}/%"], ["purchase.state", "!=", "cancelled"]],
            ["purchase", "purchase.number", "purchase.state", "product", "quantity", "note"], order=[("id", "ASC")])
        return rows

    def delay_purchase(self, purchase: int, new_date: dt.date) -> dict[str, Any]:
        result: dict[str, Any] = self.srm.call("update_purchase", call(
            {"purchase": purchase, "delivery_date": new_date.isoformat()})).result
        return result

    def deliver_less_on_line(self, purchase: int, line: int, quantity: float) -> dict[str, Any]:
        result: dict[str, Any] = self.srm.call("update_purchase", call(
            {"purchase": purchase, "lines": [{"line": line, "quantity": quantity}]})).result
        return result

    def confirm(self, purchase: int, confirmation_id: str) -> dict[str, Any]:
        """The supplier confirms the purchase (an 855, an ORDRSP, a cXML ConfirmationRequest): recorded on it."""
        result: dict[str, Any] = self.srm.call("record_supplier_confirmation", call(
            {"purchase": purchase, "confirmation_id": confirmation_id})).result
        return result

    def receive(self, purchase: int) -> int:
        """The goods arrive: every pending incoming move of the purchase is done; returns how many."""
        moves = self.srm.client.search("stock.move", [["purchase", "=", purchase], ["state", "in",
                                                                                    ["draft", "assigned"]]])
        if moves:
            self.srm.client.model("stock.move", "do", moves)
        return len(moves)

    def deliver_less(self, reference: str, product: int, quantity: float) -> dict[str, Any]:
        result: dict[str, Any] = self.srm.call("update_purchase", call(
            {"reference": reference, "lines": [{"product": product, "quantity": quantity}]})).result
        return result
