"""The salesforce adapter's writes against a local Salesforce REST API: sessions, sObject writes, /composite,
error codes, the API budget."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import Outcome
from adapters.salesforce import SalesforceAdapter
from adapters.salesforce.auth import SalesforceAuth
from adapters.salesforce.errors import ApiBudget
from bus.errors import ConfigError, PermanentError, TransientError
from bus.testing import make_call
from tests.helpers.salesforce import ORG_ID, FakeSalesforce


def adapter(sf: FakeSalesforce, **extra: Any) -> SalesforceAdapter:
    instance = SalesforceAdapter("crm", sf.settings(**extra))
    instance.open()
    return instance


def test_jwt_bearer_flow_signs_an_rs256_assertion_the_org_verifies(sf: FakeSalesforce) -> None:
    crm = adapter(sf, auth={"type": "jwt_bearer", "client_id": sf.client_id, "username": sf.username,
                            "private_key": sf.private_key})
    outcome = crm.create(make_call({"sobject": "Task", "fields": {"Subject": "Call ACME"}}))
    assert outcome.reference in sf.records["Task"]
    assert sf.token_requests[0]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


def test_a_wrong_key_is_a_permanent_error_without_the_secret(sf: FakeSalesforce) -> None:
    crm = adapter(sf, auth={"type": "client_credentials", "client_id": sf.client_id, "client_secret": "wrong-one"})
    with pytest.raises(PermanentError) as info:
        crm.create(make_call({"sobject": "Task", "fields": {"Subject": "x"}}))
    assert "invalid_client" in str(info.value) and "wrong-one" not in str(info.value)


def test_session_is_cached_and_renewed_on_invalid_session_id(sf: FakeSalesforce) -> None:
    crm = adapter(sf)
    for n in range(3):
        crm.create(make_call({"sobject": "Task", "fields": {"Subject": f"t{n}"}}))
    assert len(sf.token_requests) == 1
    sf.expire_sessions()  # Salesforce answers 401 INVALID_SESSION_ID
    crm.create(make_call({"sobject": "Task", "fields": {"Subject": "after expiry"}}))
    assert len(sf.token_requests) == 2 and len(sf.records["Task"]) == 4


def test_session_is_renewed_before_its_lifetime_ends(sf: FakeSalesforce) -> None:
    now = [0.0]
    auth = SalesforceAuth(adapter(sf).transport, sf.settings(), lifetime=600.0, clock=lambda: now[0])
    first = auth.session()
    assert first.instance_url == sf.url and first.org_id == ORG_ID
    now[0] = 530.0  # within 10% of the end
    assert auth.session().token == first.token
    now[0] = 541.0
    assert auth.session().token != first.token and auth.fetches == 2


def test_create_update_upsert_on_any_sobject(sf: FakeSalesforce) -> None:
    crm = adapter(sf)
    order = crm.create(make_call({"Status": "Draft", "AccountId": "001SM0000000iibYAA"}, args={"sobject": "Order"}))
    assert order.result == {"id": order.reference, "sobject": "Order", "created": True}
    crm.update(make_call({"sobject": "Order", "id": order.reference, "fields": {"Status": "Activated"}}))
    assert sf.records["Order"][str(order.reference)]["Status"] == "Activated"
    first = crm.upsert(make_call({"sobject": "Account", "external_id_field": "ERP_Number__c",
                                  "external_id": "C-ACME", "fields": {"Name": "ACME"}}))
    again = crm.upsert(make_call({"sobject": "Account", "fields": {"ERP_Number__c": "C-ACME", "Name": "ACME Inc"}},
                                 args={"external_id_field": "ERP_Number__c"}))
    assert first.result["created"] is True and again.result["created"] is False
    assert first.reference == again.reference
    assert sf.records["Account"][str(first.reference)]["Name"] == "ACME Inc"
    assert all(r[2].get("sforce-call-options") == "client=ironbus" for r in sf.requests if "sobjects" in r[1])


def test_read_back_adds_the_related_records_fields(sf: FakeSalesforce) -> None:
    crm = adapter(sf)
    order = crm.create(make_call({"sobject": "Order", "fields": {"Status": "Draft", "AccountId": "001ACME"}}))
    task = crm.create(make_call({"sobject": "Task", "fields": {"Subject": "Note", "WhatId": order.reference}},
                                args={"read_back": {"sobject": "Order", "id_from": "WhatId",
                                                    "fields": ["AccountId", "Status"]}}))
    assert task.result["record"] == {"AccountId": "001ACME", "Status": "Draft", "Id": order.reference}


def test_idempotency_field_turns_a_create_into_an_upsert(sf: FakeSalesforce) -> None:
    crm = adapter(sf, idempotency_field="Ironbus_Key__c")
    call = make_call({"sobject": "Task", "fields": {"Subject": "once"}}, idempotency_key="evt-1:route.crm.create")
    first, retry = crm.create(call), crm.create(call)
    assert first.reference == retry.reference and len(sf.records["Task"]) == 1
    assert sf.records["Task"][str(first.reference)]["Ironbus_Key__c"] == "evt-1:route.crm.create"


@pytest.mark.parametrize(("description", "kind", "code"), [
    ("answer-lock", TransientError, "UNABLE_TO_LOCK_ROW"),
    ("answer-validation", PermanentError, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
])
def test_errors_are_classified_by_error_code(sf: FakeSalesforce, description: str, kind: type, code: str) -> None:
    with pytest.raises(kind) as info:
        adapter(sf).create(make_call({"sobject": "Order", "fields": {"Description": description}}))
    assert code in str(info.value)


def test_invalid_field_is_permanent_and_bad_payloads_are_named(sf: FakeSalesforce) -> None:
    crm = adapter(sf)
    with pytest.raises(PermanentError, match="INVALID_FIELD"):
        crm.create(make_call({"sobject": "Order", "fields": {"Bogus__c": 1}}))
    with pytest.raises(PermanentError, match="'sobject'"):
        crm.create(make_call({"fields": {"Name": "x"}}))
    with pytest.raises(PermanentError, match="Salesforce id"):
        crm.update(make_call({"sobject": "Order", "id": "../../x", "fields": {"Name": "x"}}))
    with pytest.raises(PermanentError, match="external id"):
        crm.upsert(make_call({"sobject": "Order", "external_id_field": "Ext__c", "fields": {"Name": "x"}}))


def test_request_limit_exceeded_is_transient_and_the_budget_stops_spending(sf: FakeSalesforce) -> None:
    sf.api_limit = 10
    crm = adapter(sf, api_reserve=0.2)
    for n in range(8):  # usage 8/10 afterwards: the reserve (2) is reached
        crm.create(make_call({"sobject": "Task", "fields": {"Subject": f"t{n}"}}))
    sent = len(sf.requests)
    with pytest.raises(TransientError) as info:
        crm.create(make_call({"sobject": "Task", "fields": {"Subject": "over"}}))
    assert info.value.retry_after and info.value.retry_after >= 60
    assert len(sf.requests) == sent, "no request spent past the reserve"
    spender = adapter(sf, api_reserve=0.0)
    spender.create(make_call({"sobject": "Task", "fields": {"Subject": "9"}}))
    spender.create(make_call({"sobject": "Task", "fields": {"Subject": "10"}}))
    with pytest.raises(TransientError, match="budget down to its reserve"):
        spender.create(make_call({"sobject": "Task", "fields": {"Subject": "11"}}))
    # A process that has not seen the figures yet meets Salesforce's own refusal (403, the sample body).
    with pytest.raises(TransientError, match="REQUEST_LIMIT_EXCEEDED") as over:
        adapter(sf).create(make_call({"sobject": "Task", "fields": {"Subject": "11"}}))
    assert over.value.retry_after == 900.0


def test_budget_reads_sforce_limit_info() -> None:
    budget = ApiBudget(reserve=0.05)
    budget.observe("api-usage=18/5000")
    assert budget.snapshot() == {"used": 18, "limit": 5000} and budget.exhausted_for() is None
    budget.observe("api-usage=4760/5000; per-app-api-usage=17/250(appName=sample-app)")
    assert budget.exhausted_for() is not None


def composite_requests(sf: FakeSalesforce) -> list[Any]:
    return [r[3] for r in sf.requests if r[1].endswith("/composite")]


def test_call_many_sends_composite_requests_of_25_and_maps_each_result(sf: FakeSalesforce) -> None:
    crm = adapter(sf)
    calls = [make_call({"sobject": "Task", "fields": {"Subject": f"t{n}"}}) for n in range(30)]
    calls[7] = make_call({"sobject": "Task", "fields": {"Bogus__c": "x"}})
    calls[12] = make_call({"fields": {"Subject": "no sobject"}})
    answers = crm.call_many("create", calls)
    sent = composite_requests(sf)
    assert [len(r["compositeRequest"]) for r in sent] == [25, 4] and sent[0]["allOrNone"] is False
    assert isinstance(answers[7], PermanentError) and "INVALID_FIELD" in str(answers[7])
    assert isinstance(answers[12], PermanentError) and "sobject" in str(answers[12])
    good = [a for i, a in enumerate(answers) if i not in (7, 12)]
    assert all(isinstance(a, Outcome) for a in good) and len(sf.records["Task"]) == 28
    assert [sf.records["Task"][str(a.reference)]["Subject"] for a in good[:3]] == ["t0", "t1", "t2"]


def test_all_or_none_rolls_back_and_siblings_are_retried_alone(sf: FakeSalesforce) -> None:
    crm = adapter(sf, all_or_none=True)
    calls = [make_call({"sobject": "Task", "fields": {"Subject": "ok"}}),
             make_call({"sobject": "Task", "fields": {"Description": "answer-validation"}}),
             make_call({"sobject": "Task", "fields": {"Subject": "ok too"}})]
    answers = crm.call_many("create", calls)
    assert isinstance(answers[1], PermanentError)
    assert all(isinstance(answers[i], TransientError) and "PROCESSING_HALTED" in str(answers[i]) for i in (0, 2))
    assert not sf.records.get("Task")


def test_settings_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="login_url"):
        SalesforceAdapter("crm", {"auth": {"type": "client_credentials", "client_id": "a", "client_secret": "b"}})
    with pytest.raises(ConfigError, match="auth"):
        SalesforceAdapter("crm", {"login_url": "https://x.my.salesforce.com", "auth": {"type": "jwt_bearer",
                                                                                       "client_id": "a"}})
