"""The JSON-RPC client against a live trytond: sessions, re-login, typed values, error translation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx
import pytest

from adapters.tryton.client import TrytonClient, classify_rpc_error
from bus.errors import PermanentError, TransientError
from tests.tryton.tryton_helpers import settings, unique
from tryton import tryton_env

pytestmark = pytest.mark.tryton


def client_for(server: tryton_env.TrytonServer, db: str = "crm", password: str | None = None) -> TrytonClient:
    s = settings(server, db)
    return TrytonClient(s["url"], db, s["user"], password if password is not None else s["password"])


def test_login_then_transparent_relogin_after_the_session_is_ended(tryton_server: tryton_env.TrytonServer) -> None:
    client = client_for(tryton_server)
    try:
        assert client.context["company"] >= 1  # the seeded company is the admin's current one
        first = client._auth
        # End the session on the server behind the client's back: the next call gets 401 and must log in again.
        response = httpx.post(f"{client.url}/crm/rpc/", headers={"Authorization": first or ""},
                              json={"id": 1, "method": "common.db.logout", "params": []})
        assert response.status_code == 200
        assert client.search("party.party", [], limit=1)
        assert client._auth is not None and client._auth != first
    finally:
        client.close()


def test_wrong_password_is_a_permanent_auth_error(tryton_server: tryton_env.TrytonServer) -> None:
    client = client_for(tryton_server, password="not-the-password")
    try:
        with pytest.raises(PermanentError, match="login refused"):
            client.login()
    finally:
        client.close()


def test_typed_values_round_trip_through_the_server(tryton_server: tryton_env.TrytonServer) -> None:
    client = client_for(tryton_server, "srm")
    try:
        party = client.create("party.party", [{"name": unique("Typed"), "addresses": [["create", [{}]]]}])[0]
        unit = client.search("product.uom", [["symbol", "=", "u"]], limit=1)[0]
        category = client.search("product.category", [["accounting", "=", True]], limit=1)[0]
        template = client.create("product.template", [{
            "name": "Typed", "code": unique("T"), "type": "goods", "default_uom": unit, "sale_uom": unit,
            "purchase_uom": unit, "purchasable": True, "list_price": Decimal("12.3456"), "account_category": category,
            "product_suppliers": [["create", [{"party": party, "lead_time": dt.timedelta(days=2, hours=6)}]]]}])[0]
        row = client.read("product.template", [template], ["list_price", "create_date", "product_suppliers"])[0]
        assert row["list_price"] == Decimal("12.3456")
        assert isinstance(row["create_date"], dt.datetime)
        supplier = client.read("purchase.product_supplier", row["product_suppliers"], ["lead_time"])[0]
        assert supplier["lead_time"] == dt.timedelta(days=2, hours=6)
    finally:
        client.close()


def test_user_error_is_permanent_with_trytons_message(tryton_server: tryton_env.TrytonServer) -> None:
    client = client_for(tryton_server, "crm")
    try:
        with pytest.raises(PermanentError, match='UserError: .*"Party"'):
            client.create("sale.sale", [{"reference": "no party"}])
    finally:
        client.close()


def test_unknown_model_and_field_are_permanent(tryton_server: tryton_env.TrytonServer) -> None:
    client = client_for(tryton_server, "crm")
    try:
        with pytest.raises(PermanentError, match="unknown model or field 'party.nosuch'"):
            client.search("party.nosuch", [])
        with pytest.raises(PermanentError, match="unknown model or field"):
            client.search_read("party.party", [["nosuch_field", "=", 1]], ["name"])
    finally:
        client.close()


@pytest.mark.parametrize(("error", "kind", "text"), [
    (["ConcurrencyException", "Records were modified in the meanwhile"], TransientError, "modified"),
    (["database is locked", "Traceback …"], TransientError, "database is locked"),
    (["UserError", ["Quantity must be positive", "details", None]], PermanentError, "Quantity must be positive"),
    (["UserWarning", ["w.name", "Late moves", ""]], PermanentError, "Late moves"),
    (["'sale.nosuch'", ""], PermanentError, "unknown model or field"),
    (["could not serialize access due to concurrent update", ""], TransientError, "serialize"),
])
def test_rpc_errors_are_classified(error: list[object], kind: type[Exception], text: str) -> None:
    exc = classify_rpc_error("model.x.write", error)
    assert isinstance(exc, kind)
    assert text in str(exc)
