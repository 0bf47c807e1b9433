"""The Tryton adapter's write log: a polled record in the state the bus's own delivery left it continues that
delivery's transaction, as a child of the event the delivery carried (one story per change in the trace tree)."""

from __future__ import annotations

import datetime as dt
import threading
import time

from adapters.base import Call, MemoryAdapterStore, PollResult
from adapters.tryton.echo import WriteGate, WriteLog
from bus.envelope import Event
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner


def _call(event: Event) -> Call:
    return Call(event=event, payload={}, idempotency_key="k")


def _stamp(offset: float) -> str:
    return dt.datetime.fromtimestamp(time.time() + offset, dt.UTC).replace(tzinfo=None).isoformat()


def test_a_record_the_bus_wrote_is_polled_back_as_the_child_of_the_event_that_wrote_it() -> None:
    log = WriteLog(MemoryAdapterStore())
    change = Event(type="crm.sales_changed", source="ironbus/crm", data={}, key="SO-1")
    log.record("purchase.request", [7], _call(change))
    echoed = f"7@{_stamp(0)}"
    later = f"8@{_stamp(0)}"
    result = log.correlate("purchase.request", PollResult([(echoed, {}), (later, {})], "w"))
    assert result.correlations == {echoed: change.correlationid}
    assert result.causations == {echoed: change.id}


def test_someone_elses_later_change_starts_its_own_story() -> None:
    log = WriteLog(MemoryAdapterStore())
    change = Event(type="crm.sales_changed", source="ironbus/crm", data={})
    log.record("sale.sale", [3], _call(change))
    key = f"3@{_stamp(30)}"  # written well after the bus's write: a user's edit
    result = log.correlate("sale.sale", PollResult([(key, {})], "w"))
    assert result.correlations == {} and result.causations == {}


def test_an_entry_kept_before_causes_were_recorded_still_correlates() -> None:
    store = MemoryAdapterStore()
    store.put("wrote:sale.sale:3", f"{time.time():.3f}|corr-1")
    key = f"3@{_stamp(0)}"
    result = WriteLog(store).correlate("sale.sale", PollResult([(key, {})], "w"))
    assert result.correlations == {key: "corr-1"} and result.causations == {}


class _Echoing:
    """A source whose poll reports a record the bus wrote while delivering ``cause``."""

    def __init__(self, cause: Event) -> None:
        self.cause = cause

    def poll(self, trigger: str, watermark: str | None) -> PollResult:
        return PollResult([("1@t", {"id": 1})], "t", correlations={"1@t": self.cause.correlationid},
                          causations={"1@t": self.cause.id})


def test_the_trigger_runner_emits_the_echo_as_a_follow_up_of_its_cause() -> None:
    cause = Event(type="crm.sales_changed", source="ironbus/crm", data={}, key="SO-1")
    emitted: list[Event] = []
    runner = TriggerRunner({"scm": _Echoing(cause)}, [TriggerPlan("scm", "changed", interval=1.0)],  # type: ignore[dict-item]
                           MemoryWatermarkStore(), emitted.extend)
    assert runner.run_once(TriggerPlan("scm", "changed", interval=1.0)) == 1
    [event] = emitted
    assert (event.correlationid, event.causationid) == (cause.correlationid, cause.id)


def test_a_poll_waits_for_the_operations_writing_in_this_process() -> None:
    gate = WriteGate()
    order: list[str] = []
    with gate.writing():
        poller = threading.Thread(target=lambda: (gate.settled(5.0), order.append("polled")))
        poller.start()
        time.sleep(0.05)  # give the poll the chance to run too early (it must not)
        order.append("written")
    poller.join(5.0)
    assert order == ["written", "polled"]
    assert gate.settled(0.0)
