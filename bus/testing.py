"""The adapter contract suite: one set of tests every adapter runs.

An adapter author subclasses :class:`AdapterContract` in a test module, provides two fixtures and a few
hooks, and pytest collects the inherited tests::

    import pytest
    from bus.testing import AdapterContract

    class TestAcmeContract(AdapterContract):
        @pytest.fixture
        def adapter_factory(self, acme_server):            # any fixtures of yours
            return lambda settings: AcmeAdapter("acme", settings)

        @pytest.fixture
        def good_settings(self, acme_server):
            return {"url": acme_server.url}

        def arrange_success(self, adapter):                 # -> (operation, payload)
            return "create_widget", {"name": "ok"}

        def arrange_transient(self, adapter):
            return "create_widget", {"name": "answer-503"}

        def arrange_permanent(self, adapter):
            return "create_widget", {"name": "answer-400"}

        def observed_idempotency_key(self, adapter):
            return acme_server.last_request.headers["idempotency-key"]

The suite checks what the bus relies on: the settings schema is valid JSON Schema 2020-12, accepts the good
settings and rejects junk; a successful call returns an :class:`~adapters.base.Outcome`; a transient failure
raises :class:`~bus.errors.TransientError` (the bus retries it) and a permanent one
:class:`~bus.errors.PermanentError` (the bus dead-letters it), never a vendor exception; the idempotency key
reaches the system; ``close()`` can be called twice; the declared operations and triggers point at real
methods. A hook an adapter cannot honour (no way to provoke a transient failure, say) may call
``pytest.skip("why")``; the default hooks skip with a message, except :meth:`arrange_success`, which fails.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NoReturn

import jsonschema
import pytest

from adapters.base import Adapter, Call, Outcome, PollResult, WebhookRequest
from bus.config import RetryPolicy
from bus.delivery import deliver_with_retries
from bus.envelope import Event
from bus.errors import PermanentError, TransientError
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner

__all__ = ["AdapterContract", "make_call"]

# Two quick attempts without delay: enough to see the bus's decision, fast enough for a unit test.
_QUICK = RetryPolicy(attempts=2, backoff="fixed", initial_delay=0.0, max_delay=0.5, park=60.0, max_parks=5)

AdapterFactory = Callable[[Mapping[str, Any]], Adapter]


def _require_hook(suite: object, adapter: Adapter, hook: str) -> NoReturn:
    """A hook the suite needs: skipped for an inbound-only adapter, a failure for one with operations (a
    skipped check must not pass for a tested one)."""
    if _inbound_only(adapter):
        pytest.skip("the adapter offers no operations (inbound only)")
    pytest.fail(f"{type(suite).__name__} must implement {hook}")


def _inbound_only(adapter: Adapter) -> bool:
    return not type(adapter).operations and not adapter.accepts_any_operation


def make_call(payload: Any, *, idempotency_key: str | None = None, route: str = "contract",
              args: Mapping[str, Any] | None = None, event_type: str = "contract.test") -> Call:
    """A :class:`Call` as the worker would build it, for adapter tests."""
    event = Event(type=event_type, source="ironbus/contract", data=payload)
    key = idempotency_key or f"{event.id}:contract.target"
    return Call(event=event, payload=payload, idempotency_key=key, route=route, args=dict(args or {}))


class AdapterContract:
    """Inherit in a ``Test...`` class; see the module docstring. Hooks take the opened adapter."""

    #: Settings documents that must be rejected, in addition to :meth:`junk_settings`.
    junk_settings_values: ClassVar[tuple[Any, ...]] = ("not an object", 42, ["a", "list"], None)
    #: A misspelt setting must be an error in ``ironbus lint``, not silently ignored
    #: (``additionalProperties: false``). Set False only for an adapter that passes settings through.
    rejects_unknown_settings: ClassVar[bool] = True

    # -- what the author provides ----------------------------------------------------------------------
    @pytest.fixture
    def adapter_factory(self) -> AdapterFactory:
        raise NotImplementedError("provide an 'adapter_factory' fixture: settings -> adapter instance")

    @pytest.fixture
    def good_settings(self) -> Mapping[str, Any]:
        raise NotImplementedError("provide a 'good_settings' fixture: settings the adapter works with")

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        """Settings documents specific to this adapter that its schema must reject (override to add some)."""
        return []

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        """Return ``(operation, payload)`` that succeeds (an inbound-only adapter without operations skips)."""
        if _inbound_only(adapter):
            pytest.skip("the adapter offers no operations (inbound only)")
        raise NotImplementedError(f"{type(self).__name__} must implement arrange_success(adapter)")

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        """For a webhook trigger: ``(trigger, a genuine request, a forged or malformed one)``."""
        if any(t.kind == "webhook" for t in type(adapter).declared_triggers(adapter.settings).values()):
            pytest.fail(f"{type(self).__name__} must implement arrange_webhook(adapter): the adapter has a "
                        "webhook trigger, and its signature check is part of the contract")
        pytest.skip("the adapter has no webhook trigger")

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        """Return ``(operation, payload)`` that fails transiently (e.g. the local sink answers 503)."""
        _require_hook(self, adapter, "arrange_transient(adapter)")

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        """Return ``(operation, payload)`` that fails permanently (e.g. the local sink answers 400)."""
        _require_hook(self, adapter, "arrange_permanent(adapter)")

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        """After the success call: the idempotency key the system received."""
        _require_hook(self, adapter, "observed_idempotency_key(adapter)")

    def arrange_poll(self, adapter: Adapter) -> str:
        """Make at least one record available to a poll/schedule trigger and return the trigger's name."""
        if any(t.kind != "webhook" for t in type(adapter).declared_triggers(adapter.settings).values()):
            pytest.fail(f"{type(self).__name__} must implement arrange_poll(adapter): the adapter has a poll or "
                        "schedule trigger, and not repeating records across polls is part of the contract")
        pytest.skip("the adapter has no poll or schedule trigger")

    # -- shared fixtures ---------------------------------------------------------------------------------
    @pytest.fixture
    def adapter(self, adapter_factory: AdapterFactory, good_settings: Mapping[str, Any]) -> Iterator[Adapter]:
        instance = adapter_factory(good_settings)
        instance.open()
        try:
            yield instance
        finally:
            instance.close()

    # -- the contract ------------------------------------------------------------------------------------
    def test_settings_schema_is_valid_json_schema_2020_12(self, adapter: Adapter) -> None:
        schema = type(adapter).settings_schema
        jsonschema.Draft202012Validator.check_schema(dict(schema))
        assert schema.get("type") == "object", "a settings schema must describe an object"

    def test_settings_schema_accepts_good_settings(self, adapter: Adapter, good_settings: Mapping[str, Any]) -> None:
        validator = jsonschema.Draft202012Validator(dict(type(adapter).settings_schema))
        errors = [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
                  for e in validator.iter_errors(dict(good_settings))]
        assert not errors, f"good_settings rejected by the adapter's own schema: {errors}"

    def test_settings_schema_rejects_junk(self, adapter: Adapter, good_settings: Mapping[str, Any]) -> None:
        validator = jsonschema.Draft202012Validator(dict(type(adapter).settings_schema))
        extra = [{**good_settings, "surely_not_a_setting": True}] if self.rejects_unknown_settings else []
        for junk in [*self.junk_settings_values, *extra, *self.junk_settings(good_settings)]:
            assert not validator.is_valid(junk), f"settings schema accepted junk: {junk!r}"

    def test_webhook_accepts_genuine_and_refuses_forged_requests(self, adapter: Adapter) -> None:
        trigger, genuine, forged = self.arrange_webhook(adapter)
        payloads = adapter.webhook(trigger, genuine)
        assert isinstance(payloads, list) and payloads, "a genuine request must yield at least one payload"
        with pytest.raises(PermanentError):
            adapter.webhook(trigger, forged)

    def test_success_returns_an_outcome(self, adapter: Adapter) -> None:
        operation, payload = self.arrange_success(adapter)
        outcome = adapter.call(operation, make_call(payload))
        assert isinstance(outcome, Outcome)
        assert outcome.reference is None or isinstance(outcome.reference, str)

    def test_transient_failure_raises_transient_error(self, adapter: Adapter) -> None:
        operation, payload = self.arrange_transient(adapter)
        with pytest.raises(TransientError) as info:
            adapter.call(operation, make_call(payload))
        # retry_after, when given, is a usable delay.
        assert info.value.retry_after is None or info.value.retry_after >= 0
        assert str(info.value), "a delivery error must say what went wrong"
        # And the bus's delivery policy retries it, then parks it for later (never dead-letters it).
        attempted = deliver_with_retries(lambda attempt: adapter.call(operation, make_call(payload)), _QUICK)
        assert attempted.status == "park", attempted

    def test_permanent_failure_raises_permanent_error(self, adapter: Adapter) -> None:
        operation, payload = self.arrange_permanent(adapter)
        # The bus dead-letters a PermanentError with its message as the reason.
        with pytest.raises(PermanentError) as info:
            adapter.call(operation, make_call(payload))
        assert str(info.value), "a delivery error must say what went wrong"
        attempted = deliver_with_retries(lambda attempt: adapter.call(operation, make_call(payload)), _QUICK)
        assert attempted.status == "dead" and attempted.attempts == 1, attempted

    def test_call_many_answers_each_call_in_order(self, adapter: Adapter) -> None:
        """``call_many`` (several first attempts at once) gives what ``call`` would, per call, in order — an
        error as a returned exception, never raised for the whole group."""
        operation, payload = self.arrange_success(adapter)
        calls = [make_call(payload, idempotency_key=f"contract-many-{i}") for i in range(3)]
        outcomes = adapter.call_many(operation, calls)
        assert len(outcomes) == len(calls), "one answer per call"
        assert all(isinstance(o, Outcome) for o in outcomes), outcomes
        bad_operation, bad_payload = self.arrange_permanent(adapter)
        answers = adapter.call_many(bad_operation, [make_call(bad_payload)])
        assert len(answers) == 1 and isinstance(answers[0], PermanentError), answers

    def test_idempotency_key_reaches_the_system(self, adapter: Adapter) -> None:
        operation, payload = self.arrange_success(adapter)
        key = "contract-idem-7f3a9c"
        adapter.call(operation, make_call(payload, idempotency_key=key))
        assert self.observed_idempotency_key(adapter) == key

    def test_poll_returns_records_and_the_runner_does_not_repeat_them(self, adapter: Adapter) -> None:
        name = self.arrange_poll(adapter)
        spec = type(adapter).declared_triggers(adapter.settings)[name]
        assert spec.kind in ("poll", "schedule"), f"trigger {name!r} is a {spec.kind} trigger, not a poll"
        result = adapter.poll(name, None)
        assert isinstance(result, PollResult)
        assert result.records, "arrange_poll must leave at least one record for the poll to find"
        assert all(isinstance(key, str) and key for key, _ in result.records), "dedup keys are non-empty strings"
        assert result.watermark is None or isinstance(result.watermark, str)
        # Through the bus's own runner: a second poll after the watermark was stored emits nothing again.
        emitted: list[Event] = []
        plan = TriggerPlan(adapter.system, name)
        runner = TriggerRunner({adapter.system: adapter}, [plan], MemoryWatermarkStore(), emitted.extend)
        runner.run_once(plan)
        first = [e.id for e in emitted]
        assert first, "the runner emitted nothing for the arranged records"
        runner.run_once(plan)
        assert [e.id for e in emitted] == first, "records were emitted twice"

    def test_close_is_idempotent(self, adapter_factory: AdapterFactory, good_settings: Mapping[str, Any]) -> None:
        instance = adapter_factory(good_settings)
        instance.open()
        instance.close()
        instance.close()

    def test_health_does_not_raise(self, adapter: Adapter) -> None:
        health = adapter.health()
        assert isinstance(health.ok, bool)

    def test_declared_operations_and_triggers_are_consistent(self, adapter: Adapter) -> None:
        cls = type(adapter)
        assert cls.name, "an adapter must set its registry name"
        assert cls.operations or cls.triggers or cls.accepts_any_operation, \
            "an adapter offers at least one operation or trigger"
        methods = {name for name, _ in inspect.getmembers(adapter, callable)}
        for name, op in cls.operations.items():
            assert name == op.name and op.method in methods, f"operation {name!r}"
        for name, trig in cls.triggers.items():
            assert name == trig.name and trig.method in methods, f"trigger {name!r}"
            assert trig.kind in ("poll", "webhook", "schedule")
            assert trig.interval is None or trig.interval > 0, f"trigger {name!r} interval must be positive"
        operation, _ = self.arrange_success(adapter)
        assert operation in cls.operations or cls.accepts_any_operation, \
            f"arrange_success names undeclared operation {operation!r}"
