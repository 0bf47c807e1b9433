from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

import bus.metrics
from bus.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the rendered text back into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_accumulate_per_label_set() -> None:
    m = Metrics()
    m.received("crm", "deal_changed")
    m.received("crm", "deal_changed", n=4)
    m.received("srm", "issue")
    m.rejected("crm", "deal_changed", "mismatch")
    m.rate_limited("crm", 2)
    got = samples(m)
    assert got[("ironbus_events_received_total", (("system", "crm"), ("trigger", "deal_changed")))] == 5
    assert got[("ironbus_events_received_total", (("system", "srm"), ("trigger", "issue")))] == 1
    assert got[("ironbus_webhook_rejected_total",
                (("reason", "mismatch"), ("system", "crm"), ("trigger", "deal_changed")))] == 1
    assert got[("ironbus_rate_limited_total", (("system", "crm"),))] == 2


def test_delivery_counts_status_and_observes_duration() -> None:
    m = Metrics()
    m.delivery("r1", "scm.update_demand", "delivered", seconds=0.02)
    m.delivery("r1", "scm.update_demand", "retried")
    m.latency("r1", 1.5)
    got = samples(m)
    labels = (("route", "r1"), ("status", "delivered"), ("target", "scm.update_demand"))
    assert got[("ironbus_deliveries_total", labels)] == 1
    hist = (("route", "r1"), ("target", "scm.update_demand"))
    assert got[("ironbus_delivery_seconds_count", hist)] == 1
    assert got[("ironbus_delivery_seconds_sum", hist)] == pytest.approx(0.02)
    assert got[("ironbus_accept_to_delivered_seconds_count", (("route", "r1"),))] == 1


def test_unknown_delivery_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown delivery status 'deliverd'"):
        Metrics().delivery("r", "t", "deliverd")


def test_gauges_set_and_skip_unknown_depth() -> None:
    m = Metrics()
    m.set_queue_depth({"ready": 7, "leased": -1})
    m.circuit_open("crm", True)
    m.circuit_open("srm", True)
    m.circuit_open("srm", False)
    got = samples(m)
    assert got[("ironbus_queue_depth", (("state", "ready"),))] == 7
    assert ("ironbus_queue_depth", (("state", "leased"),)) not in got
    assert got[("ironbus_circuit_open", (("system", "crm"),))] == 1
    assert got[("ironbus_circuit_open", (("system", "srm"),))] == 0


def test_instances_are_isolated_and_default_is_shared() -> None:
    a, b = Metrics(), Metrics()
    a.received("x", "y")
    assert ("ironbus_events_received_total", (("system", "x"), ("trigger", "y"))) not in samples(b)
    assert bus.metrics.default() is bus.metrics.default()
    before = samples(bus.metrics.default()).get(
        ("ironbus_events_received_total", (("system", "mod"), ("trigger", "level"))), 0.0)
    bus.metrics.received("mod", "level", 3)
    assert b"ironbus_events_received_total" in bus.metrics.render()
    after = samples(bus.metrics.default())[("ironbus_events_received_total", (("system", "mod"), ("trigger", "level")))]
    assert after == before + 3


def test_concurrent_increments_are_not_lost() -> None:
    m = Metrics()

    def work() -> None:
        for _ in range(2000):
            m.received("c", "t")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert samples(m)[("ironbus_events_received_total", (("system", "c"), ("trigger", "t")))] == 8000
