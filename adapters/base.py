"""The adapter contract: what a vendor plug-in offers the bus.

An adapter is a class for one vendor product. A *system* in routes.yaml is one configured instance of it.
It declares

* ``settings_schema`` — a JSON Schema for its ``settings:`` block, checked by ``ironbus lint`` before
  anything connects;
* **operations** (outbound) — methods decorated with :func:`operation`, each taking a :class:`Call` and
  returning an :class:`Outcome`, raising :class:`~bus.errors.TransientError` or
  :class:`~bus.errors.PermanentError` (never a vendor library's exception);
* **triggers** (inbound) — methods decorated with :func:`trigger`: ``poll`` triggers return the records
  changed since a watermark, ``webhook`` triggers turn a verified HTTP request into payloads, ``schedule``
  triggers produce payloads on a cron schedule.

Lifecycle: ``open()`` before first use, ``health()`` any time, ``close()`` once at the end (it must be safe
to call twice). Adapters are loaded lazily from the entry-point group ``ironbus.adapters``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

# The value types and the state store live in their own modules; they are re-exported here because
# adapters.base is the import path third-party adapter plugins use for the whole contract.
from adapters.adapterstore import AdapterStore, MemoryAdapterStore
from adapters.contract import (
    Call,
    Health,
    MasterRecord,
    OperationSpec,
    Outcome,
    PollResult,
    RefusalSink,
    Refused,
    SettingsWarning,
    TriggerSpec,
    WebhookAnswer,
    WebhookRequest,
)
from bus.errors import PermanentError

__all__ = [
    "Adapter",
    "AdapterStore",
    "Call",
    "Health",
    "MasterRecord",
    "MemoryAdapterStore",
    "OperationSpec",
    "Outcome",
    "PollResult",
    "Refused",
    "RefusalSink",
    "SettingsWarning",
    "TriggerSpec",
    "WebhookAnswer",
    "WebhookRequest",
    "operation",
    "trigger",
]

F = TypeVar("F", bound=Callable[..., Any])


def operation(name: str | None = None, *, description: str = "", bulk: bool = False) -> Callable[[F], F]:
    """Mark a method as an outbound operation: ``def update_order(self, call: Call) -> Outcome``."""

    def mark(fn: F) -> F:
        fn.__ironbus_operation__ = OperationSpec(  # type: ignore[attr-defined]
            name or fn.__name__, fn.__name__, description or (fn.__doc__ or "").strip().split("\n")[0], bulk)
        return fn

    return mark


def trigger(name: str | None = None, *, kind: Literal["poll", "webhook", "schedule"], description: str = "",
            interval: float | None = None) -> Callable[[F], F]:
    """Mark a method as an inbound trigger.

    * ``poll``: ``def changed_orders(self, watermark: str | None) -> PollResult``
    * ``webhook``: ``def order_webhook(self, request: WebhookRequest) -> list[Any]`` (raises
      :class:`~bus.errors.PermanentError` on a bad signature)
    * ``schedule``: ``def nightly(self, watermark: str | None) -> PollResult``
    """

    def mark(fn: F) -> F:
        fn.__ironbus_trigger__ = TriggerSpec(  # type: ignore[attr-defined]
            name or fn.__name__, fn.__name__, kind, description or (fn.__doc__ or "").strip().split("\n")[0],
            interval)
        return fn

    return mark


class Adapter:
    """Base class of every adapter. Subclasses set ``name``, ``settings_schema`` and decorate methods."""

    #: Registry name, as used in routes.yaml ``adapter:``.
    name: ClassVar[str] = ""
    #: One line for ``ironbus adapters``.
    summary: ClassVar[str] = ""
    #: JSON Schema (2020-12) of the ``settings:`` block.
    settings_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    #: Filled by ``__init_subclass__`` from the decorated methods.
    operations: ClassVar[dict[str, OperationSpec]] = {}
    triggers: ClassVar[dict[str, TriggerSpec]] = {}
    #: Whether the webhook server runs this adapter's webhook handler in a thread (it may block on I/O).
    #: Adapters whose handler only verifies and parses set it False: it then runs on the event loop.
    webhook_blocking: ClassVar[bool] = True
    #: Whether a system of this adapter offers operations its settings name (the http adapter's
    #: ``operations:``, the stub's) besides the decorated ones; see :meth:`declared_operations` and
    #: :meth:`accepts`.
    accepts_any_operation: ClassVar[bool] = False
    #: Whether routes may consume any ``system.trigger`` of this adapter (events arrive by ``ironbus send``).
    accepts_any_trigger: ClassVar[bool] = False
    #: Whether :meth:`call_many` makes several calls at once; the worker then sends the first attempts of one
    #: operation together. Set automatically for a class that overrides :meth:`call_many`.
    groups_calls: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ops: dict[str, OperationSpec] = {}
        trigs: dict[str, TriggerSpec] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                spec = getattr(value, "__ironbus_operation__", None)
                if isinstance(spec, OperationSpec):
                    ops[spec.name] = spec
                tspec = getattr(value, "__ironbus_trigger__", None)
                if isinstance(tspec, TriggerSpec):
                    trigs[tspec.name] = tspec
        cls.operations = ops
        cls.triggers = trigs
        if "groups_calls" not in vars(cls) and "call_many" in vars(cls):
            cls.groups_calls = True

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        self.system = system
        self.settings = dict(settings)
        self.closed = False
        #: Durable per-system state (see :class:`AdapterStore`); in memory until the bus binds the journal's.
        self.store: AdapterStore = MemoryAdapterStore()
        #: Refused inbound documents not yet given to a sink (kept here until the bus binds the journal's).
        self.refused: list[Refused] = []
        self._refusals: RefusalSink | None = None

    def bind_store(self, store: AdapterStore) -> None:
        """Called by the bus before :meth:`open` with the journal-backed store of this system."""
        self.store = store

    def bind_refusals(self, sink: RefusalSink | None) -> None:
        """Called by the bus before :meth:`open` with the sink that keeps refused documents as dead letters
        (None: keep them in :attr:`refused`, as tests and re-reads do)."""
        self._refusals = sink

    def refuse(self, refused: Refused) -> None:
        """Record an inbound document this adapter refused (it still answers the partner as its protocol
        says: a negative acknowledgement, a 4xx). Must not raise: losing the record must not turn a refusal
        into a server error."""
        if self._refusals is None:
            self.refused.append(refused)
            return
        try:
            self._refusals(self.system, refused)
        except Exception:  # noqa: BLE001 - logged by the sink's owner; kept here so it is not lost
            self.refused.append(refused)

    def reprocess(self, refused: Refused) -> list[Any]:
        """Read a refused document again with the current settings (``ironbus dlq retry`` of its letter): the
        payloads its trigger would have emitted. Raises :class:`~bus.errors.PermanentError` with the reason
        when it is still refused. Adapters that keep refusals override it."""
        raise PermanentError(f"adapter {self.name!r} cannot read a refused document again")

    # -- what a system offers (asked by ironbus lint and ironbus adapters) --------------------------------
    @classmethod
    def declared_operations(cls, settings: Mapping[str, Any]) -> list[str] | None:
        """The operation names a system with these ``settings`` offers, or None when that is not known from
        the settings (then: the decorated operations, or any when :attr:`accepts_any_operation`). Adapters
        whose operations are declared in settings (the http adapter) override it."""
        return None

    @classmethod
    def offered_operations(cls, settings: Any) -> list[str] | None:
        """Operation names ``ironbus lint`` checks ``to:`` targets against; None when any is accepted."""
        named = settings.get("operations") if isinstance(settings, Mapping) else None
        if cls.accepts_any_operation and not named:
            return None
        declared = cls.declared_operations(settings if isinstance(settings, Mapping) else {})
        if declared is not None:
            return sorted(declared)
        if cls.accepts_any_operation:
            return sorted(named or [])
        return sorted(cls.operations)

    @classmethod
    def settings_warnings(cls, settings: Mapping[str, Any]) -> list[SettingsWarning]:
        """Deprecated forms in a system's (schema-valid) ``settings`` that still work; ``ironbus lint`` warns
        on each, with its file and line. Adapters that deprecate a setting's form override it."""
        return []

    def accepts(self, operation_name: str) -> bool:
        """Whether this system can run ``operation_name`` (a decorated operation, or one its settings declare)."""
        return operation_name in self.operations

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect / log in. Called once before the first operation or trigger."""

    def health(self) -> Health:
        """Is the system reachable? Must not raise."""
        return Health(True)

    def close(self) -> None:
        """Release connections. Safe to call more than once."""
        self.closed = True

    # -- webhook edge (asked by bus.webhooks.endpoints_for once per webhook trigger) ---------------------
    def webhook_key(self, trigger_name: str) -> Callable[[Any], str | None] | None:
        """A function giving the business key of one payload of ``trigger_name``, or None (no key)."""
        return None

    def webhook_content_types(self, trigger_name: str) -> tuple[str, ...]:
        """Media types ``trigger_name`` accepts (entries as in :data:`bus.mediatypes.MEDIA_TYPES`); () = any."""
        return ()

    def webhook_answer(self, trigger_name: str, request: WebhookRequest | None, status: int, reason: str,
                       detail: str, accepted: Sequence[str]) -> WebhookAnswer | None:
        """Shape the HTTP answer when the vendor's protocol dictates one; None keeps the bus's JSON answer.

        Called once per request, after the bus decided: ``status`` 202 with the ``accepted`` event ids when
        every payload is durably journaled, otherwise the refusal's status (4xx for a bad document, 503 when
        the bus could not store it), its fixed ``reason`` code and ``detail``. ``request`` is None when the
        request was refused before its body was read. It must not raise and must not block on I/O; the
        answer's status may differ from ``status`` (a cXML acceptance is ``200``), but a refusal must stay a
        refusal, so the vendor retries or gives up as the bus decided.
        """
        return None

    # -- triggers a system's settings declare ------------------------------------------------------------
    @classmethod
    def declared_triggers(cls, settings: Mapping[str, Any]) -> dict[str, TriggerSpec]:
        """The triggers a system with these ``settings`` offers: the decorated methods, plus any the adapter
        lets its settings declare (the ``http`` adapter's ``polls``; such an adapter overrides this and
        :meth:`poll`). Lint, the trigger planner and ``ironbus adapters`` ask this rather than ``triggers``."""
        return dict(cls.triggers)

    # -- master data -------------------------------------------------------------------------------------
    def master_data(self, entity: str) -> list[MasterRecord] | None:
        """Every record of ``entity`` (``customer``, ``material``, ``supplier``) this system holds, or None when
        the adapter cannot list that entity. Used by ``ironbus xref check``."""
        return None

    # -- dispatch --------------------------------------------------------------------------------------
    def call(self, operation_name: str, call: Call) -> Outcome:
        """Run one operation by name."""
        spec = self.operations[operation_name]
        outcome: Outcome = getattr(self, spec.method)(call)
        return outcome

    def call_many(self, operation_name: str, calls: Sequence[Call]) -> list[Outcome | Exception]:
        """Run one operation for several independent calls — first attempts of one worker batch, no two of
        the same ordering key — and give each one's outcome, or the exception it raised, in order.

        This default runs them one after another (the worker does not even call it: :attr:`groups_calls` is
        False). An adapter whose system can take them at once overrides it: the http adapter sends them on
        several pooled connections, so the worker waits once per wave instead of once per call. Retries stay
        the worker's.
        """
        out: list[Outcome | Exception] = []
        for one in calls:
            try:
                out.append(self.call(operation_name, one))
            except Exception as exc:  # handed back: the worker classifies it as it would a raised one
                out.append(exc)
        return out

    def call_bulk(self, operation_name: str, calls: Sequence[Call]) -> list[Outcome]:
        """Run a bulk operation on several calls at once (only for specs with ``bulk=True``): one outcome per
        call, in order. When the vendor says some calls failed, raise :class:`~bus.errors.PartialFailure`
        with each call's outcome or exception, so each delivery is settled by its own result."""
        spec = self.operations[operation_name]
        outcomes: list[Outcome] = getattr(self, spec.method)(list(calls))
        return outcomes

    def poll(self, trigger_name: str, watermark: str | None) -> PollResult:
        spec = self.triggers[trigger_name]
        result: PollResult = getattr(self, spec.method)(watermark)
        return result

    def webhook(self, trigger_name: str, request: WebhookRequest) -> list[Any]:
        spec = self.triggers[trigger_name]
        payloads: list[Any] = getattr(self, spec.method)(request)
        return payloads
