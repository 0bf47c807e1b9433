"""Provision a freshly initialised Tryton database so sales and purchases work over RPC.

A new database (modules ``sale_supply stock_supply`` activated) has no company, no currency and no chart of
accounts. Without a company, sale creation fails on the "User in companies" rule; without a chart and an
accounting product category, ``confirm`` silently leaves sales and purchases in ``confirmed`` and
``purchase.request.create_purchase`` raises a UserError. :func:`provision` adds exactly what is needed:

* the currency (Tryton ships none and its import scripts need internet access);
* a company (party + ``company.company.config`` wizard), made the admin user's current company;
* a chart of accounts from the minimal English template, with default receivable/payable/expense/revenue
  accounts (``account.create_chart`` wizard);
* one accounting product category ("Goods") that products get when none is given.

Idempotent: each step is skipped when its result already exists. Fiscal years are not needed: only draft
invoices are created.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog

from adapters.tryton.client import TrytonClient

__all__ = ["ACCOUNT_CATEGORY", "Provisioned", "provision"]

log = structlog.get_logger(__name__)

#: Name of the accounting product category the adapter gives products that name none.
ACCOUNT_CATEGORY = "Goods"


@dataclass(frozen=True)
class Provisioned:
    company: int
    currency: int
    account_category: int
    warehouse: int


def _one(client: TrytonClient, model: str, domain: list[object]) -> int | None:
    ids = client.search(model, domain, limit=1)
    return ids[0] if ids else None


def _currency(client: TrytonClient, code: str) -> int:
    found = _one(client, "currency.currency", [["code", "=", code]])
    if found is not None:
        return found
    names = {"EUR": ("Euro", "€"), "USD": ("U.S. Dollar", "$"), "GBP": ("Pound Sterling", "£")}
    name, symbol = names.get(code, (code, code))
    return client.create("currency.currency", [{"name": name, "code": code, "symbol": symbol,
                                                "rounding": Decimal("0.01"), "digits": 2}])[0]


def _company(client: TrytonClient, name: str, currency: int) -> int:
    found = _one(client, "company.company", [["party.name", "=", name]])
    if found is None:
        party = client.create("party.party", [{"name": name}])[0]
        # Executing the "add" transition directly: the wizard saves the company and makes it the current
        # company of every user without one (the admin).
        client.wizard("company.company.config", ["add"],
                      data={"company": {"party": party, "currency": currency}})
        found = _one(client, "company.company", [["party.name", "=", name]])
        if found is None:
            raise RuntimeError(f"company {name!r} was not created by company.company.config")
    client.refresh_context()
    return found


def _account(client: TrytonClient, company: int, kind: str) -> int | None:
    return _one(client, "account.account", [["company", "=", company], ["closed", "!=", True],
                                            [f"type.{kind}", "=", True]])


def _chart(client: TrytonClient, company: int) -> None:
    if _one(client, "account.account", [["company", "=", company]]) is not None:
        return
    template = client.model("ir.model.data", "get_id", "account", "account_template_root_en")
    session, _start, _end = client.call("wizard.account.create_chart.create")
    try:
        client.call("wizard.account.create_chart.execute", session,
                    {"account": {"account_template": template, "company": company}}, "create_account")
        properties = {
            "company": company,
            "account_receivable": _account(client, company, "receivable"),
            "account_payable": _account(client, company, "payable"),
            "category_account_expense": _account(client, company, "expense"),
            "category_account_revenue": _account(client, company, "revenue"),
        }
        client.call("wizard.account.create_chart.execute", session, {"account": {
            "account_template": template, "company": company}, "properties": properties}, "create_properties")
    finally:
        client.call("wizard.account.create_chart.delete", session)


def _account_category(client: TrytonClient, company: int) -> int:
    found = _one(client, "product.category", [["name", "=", ACCOUNT_CATEGORY], ["accounting", "=", True]])
    if found is not None:
        return found
    expense = _account(client, company, "expense")
    revenue = _account(client, company, "revenue")
    return client.create("product.category", [{"name": ACCOUNT_CATEGORY, "accounting": True,
                                               "account_expense": expense, "account_revenue": revenue}])[0]


def provision(client: TrytonClient, *, company_name: str = "Example Company", currency: str = "EUR") -> Provisioned:
    """Make ``client``'s database ready for sales, supply planning and purchases (see module doc)."""
    currency_id = _currency(client, currency)
    company = _company(client, company_name, currency_id)
    _chart(client, company)
    category = _account_category(client, company)
    warehouse = _one(client, "stock.location", [["type", "=", "warehouse"]])
    if warehouse is None:
        raise RuntimeError("no warehouse location: is the stock module activated?")
    log.info("tryton.provisioned", database=client.database, company=company, currency=currency_id,
             account_category=category, warehouse=warehouse)
    return Provisioned(company=company, currency=currency_id, account_category=category, warehouse=warehouse)
