"""In-process pipeline throughput: decode -> route -> map -> validate -> encode, one core.

The message is a realistic CRM order change (~1 KB: customer, shipping address, five lines, dates in three
vendor formats, amounts as strings with a decimal comma). Two ways are timed in the same run:

* baseline ("naive"): ``json.loads``, ``jmespath.search`` per field (parsed from text on every call, tree
  interpreter), ``jsonschema.validate()`` per message, ``json.dumps``;
* ironbus: ``Event.decode`` (orjson), route lookup by event type, compiled :class:`bus.mapping.Mapping`,
  compiled JSON Schema validator (jsonschema_rs through :class:`bus.schemas.SchemaRegistry`),
  ``Event.encode``; and, when ``bus.pipeline`` is present, the same through ``Pipeline.process``.

Run: ``.venv/bin/python bench/pipeline.py [--seconds 1.0] [--rounds 5] [--profile]``. Figures are messages per
second on one thread (one core), the median of several rounds after a warm-up. The last line is JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jmespath
import jsonschema
import orjson
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus.envelope import Event  # noqa: E402
from bus.functions import IronbusFunctions  # noqa: E402
from bus.mapping import Mapping  # noqa: E402
from bus.schemas import SchemaRegistry  # noqa: E402
from bus.xref import MemoryXref  # noqa: E402

TARGET = 20_000
EVENT_TYPE = "crm.sale_changed"

MAPPING_YAML = textwrap.dedent("""\
    description: CRM sale order -> canonical order.changed
    output: order.changed
    fields:
      order_id: number
      source_system: {value: crm}
      changed_at: datetime(write_date)
      revision: revision
      change_kind: "value_map('change_kind', state, 'updated')"
      status: "value_map('order_status', state)"
      customer.id: "xref('customer', 'crm', party.id)"
      customer.name: party.name
      customer_reference: reference
      order_date: date(sale_date)
      requested_date: date(shipping_date)
      currency: upper(currency)
      totals.net: decimal(untaxed_amount)
      totals.tax: decimal(tax_amount)
      totals.gross: decimal(total_amount)
      ship_to.kind: {value: shipping}
      ship_to.name: shipment_address.name
      ship_to.street: "shipment_address.[street]"
      ship_to.postal_code: shipment_address.postal_code
      ship_to.city: shipment_address.city
      ship_to.country: upper(shipment_address.country)
      note: comment
      lines:
        each: lines
        fields:
          line_no: integer(sequence)
          material_id: "xref('material', 'crm', product.id)"
          description: description
          quantity: number(quantity)
          unit: "value_map('unit', unit)"
          requested_date: date(delivery_date)
          price.amount: decimal(unit_price)
          price.currency: {value: EUR}
    value_maps:
      order_status: {draft: draft, quotation: open, confirmed: confirmed, processing: processing, done: done,
                     cancelled: cancelled}
      change_kind: {cancelled: cancelled, draft: created}
      unit: {kg: KGM, u: C62, m: MTR}
    """)


def sample_order() -> dict[str, Any]:
    """A CRM order as a webhook/poll would deliver it (about 1 KB of JSON)."""
    lines = [
        {"sequence": 10 * (i + 1), "product": {"id": 100 + i}, "description": f"Pump HP-{200 + i}",
         "quantity": f"{i + 1}2,5", "unit": ("kg", "u", "m")[i % 3], "unit_price": f"1.04{i},20",
         "delivery_date": f"2024-03-{20 + i}"}
        for i in range(5)
    ]
    return {
        "id": 4711, "number": "SO-2024-004711", "reference": "ACME-PO-88917", "state": "processing", "revision": 7,
        "write_date": "2024-03-05T14:22:10+0100", "sale_date": "2024-03-01", "shipping_date": "/Date(1711929600000)/",
        "party": {"id": 42, "name": "ACME Industrial GmbH"},
        "shipment_address": {"name": "ACME Werk 2", "street": "Hauptstraße 12", "postal_code": "80331",
                             "city": "München", "country": "de"},
        "currency": "eur", "untaxed_amount": "12.345,60", "tax_amount": "2.345,66", "total_amount": "14.691,26",
        "comment": "Please deliver before noon.", "lines": lines,
    }


def xref_store() -> MemoryXref:
    return MemoryXref.from_dict({"customer": {"crm": {"42": "CUST-0042"}},
                                 "material": {"crm": {str(100 + i): f"MAT-{100 + i}" for i in range(5)}}})


def wire_message() -> bytes:
    event = Event(type=EVENT_TYPE, source="ironbus/crm", data=sample_order(), key="SO-2024-004711", sequence=7)
    return event.encode()


# --- baseline ----------------------------------------------------------------------------------------------


def naive_pipeline(mapping_doc: dict[str, Any], schema: dict[str, Any], registry: Registry[Any],
                   functions: IronbusFunctions, reuse_validator: bool = False) -> Callable[[bytes], bytes]:
    """What a straightforward implementation does: interpret everything per message.

    ``reuse_validator`` builds the python-jsonschema validator once instead of calling ``validate()`` (which
    checks the schema itself against the meta-schema on every call): a second, kinder baseline.
    """
    options = jmespath.Options(custom_functions=functions)
    validator = jsonschema.Draft202012Validator(schema, registry=registry)

    def map_fields(fields: dict[str, Any], doc: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target, spec in fields.items():
            if isinstance(spec, str):
                value = jmespath.search(spec, doc, options=options)
            elif "value" in spec:
                value = spec["value"]
            elif "each" in spec:
                items = jmespath.search(spec["each"], doc, options=options)
                value = [map_fields(spec["fields"], item) for item in items or []]
            else:
                value = jmespath.search(spec["expr"], doc, options=options)
            if value is None:
                continue
            node = out
            *parents, last = target.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return out

    routes = {EVENT_TYPE: mapping_doc["fields"]}

    def run(body: bytes) -> bytes:
        message = json.loads(body)
        data = map_fields(routes[message["type"]], message["data"])
        if reuse_validator:
            validator.validate(data)
        else:
            jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator, registry=registry)
        out = dict(message, type="order.changed", data=data)
        return json.dumps(out).encode()

    return run


# --- ironbus -----------------------------------------------------------------------------------------------


def ironbus_pipeline(mapping: Mapping, validate: Callable[[Any], None], schema_id: str) -> Callable[[bytes], bytes]:
    routes = {EVENT_TYPE: (mapping, validate)}

    def run(body: bytes) -> bytes:
        event = Event.decode(body)
        route_mapping, route_validate = routes[event.type]
        data = route_mapping.apply(event.data, event=event)
        route_validate(data)
        return Event(type="order.changed", source=event.source, data=data, id=event.id, subject=event.subject,
                     time=event.time, correlationid=event.correlationid, causationid=event.causationid,
                     key=event.key, sequence=event.sequence, dataschema=schema_id,
                     extensions=event.extensions).encode()

    return run


def pipeline_module_run(workdir: Path, xref: MemoryXref) -> Callable[[bytes], bytes] | None:
    """The same work through the lead's ``bus.pipeline.Pipeline``, when it exists."""
    try:
        from bus.config import load_config
        from bus.pipeline import Pipeline
    except ImportError:
        return None
    routes = workdir / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          crm: {{adapter: stub}}
          scm: {{adapter: stub}}
        routes:
          - name: order-change-to-demand
            from: {EVENT_TYPE}
            map: mapping.yaml
            validate: order.changed
            to: [scm.update_demand]
        """), encoding="utf-8")
    pipeline = Pipeline(load_config(routes), xref=xref)

    def run(body: bytes) -> bytes:
        event = Event.decode(body)
        (result,) = pipeline.process(event)
        if result.event is None:
            raise RuntimeError(f"pipeline did not dispatch: {result.status} {result.error}")
        return result.event.encode()

    return run


# --- measuring ---------------------------------------------------------------------------------------------


class Rate:
    """Messages per second of one path: wall clock (perf_counter) and CPU time of this thread.

    On a shared machine the wall-clock figure drops whenever other processes take the core; the CPU-time
    figure counts only the time this thread actually ran, so it is the steadier per-core number.
    """

    def __init__(self, wall: list[float], cpu: list[float]) -> None:
        self.wall_rounds, self.cpu_rounds = wall, cpu
        self.wall, self.cpu = statistics.median(wall), statistics.median(cpu)

    def line(self) -> str:
        return (f"{self.wall:>10,.0f} msg/s wall  {self.cpu:>10,.0f} msg/s cpu  "
                f"rounds(wall) {[round(r) for r in self.wall_rounds]}")


def rate(run: Callable[[bytes], bytes], body: bytes, seconds: float, rounds: int) -> Rate:
    """Median messages/second over ``rounds`` rounds of about ``seconds`` each, after a warm-up."""
    deadline = time.perf_counter() + min(seconds, 0.3)
    while time.perf_counter() < deadline:  # warm-up: caches, lazy compilation, allocator
        run(body)
    # Size a batch so that one round takes about ``seconds``; the clock is read per batch, not per call.
    start = time.perf_counter()
    probe = 0
    while time.perf_counter() - start < 0.05:
        run(body)
        probe += 1
    batch = max(1, int(probe * seconds / 0.05 / 10))
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        done = 0
        start, start_cpu = time.perf_counter(), time.thread_time()
        while True:
            for _ in range(batch):
                run(body)
            done += batch
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        wall.append(done / elapsed)
        cpu.append(done / max(time.thread_time() - start_cpu, 1e-9))
    return Rate(wall, cpu)


def profile(run: Callable[[bytes], bytes], body: bytes, count: int = 20_000) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        run(body)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round (default 1.0)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure; the median is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile breakdown of the ironbus path")
    args = parser.parse_args(argv)

    registry = SchemaRegistry(ROOT / "schemas")
    schema = registry.schema("order.changed")
    common = orjson.loads((ROOT / "schemas" / "common.json").read_bytes())
    ref_registry: Registry[Any] = Registry().with_resources(
        [(doc["$id"], Resource.from_contents(doc)) for doc in (schema, common)])
    xref = xref_store()
    body = wire_message()

    with tempfile.TemporaryDirectory(prefix="ironbus-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "mapping.yaml").write_text(MAPPING_YAML, encoding="utf-8")
        mapping = Mapping.load(workdir / "mapping.yaml", xref=xref)
        mapping_doc = orjson.loads(orjson.dumps(__import__("yaml").safe_load(MAPPING_YAML)))
        naive = naive_pipeline(mapping_doc, schema, ref_registry, mapping.functions)
        ours = ironbus_pipeline(mapping, registry.validator("order.changed"), registry.schema_id("order.changed"))
        through_pipeline = pipeline_module_run(workdir, xref)

        # Both paths must produce the same canonical document, or the comparison means nothing.
        naive_out, our_out = json.loads(naive(body))["data"], orjson.loads(ours(body))["data"]
        if naive_out != our_out:
            raise SystemExit(f"outputs differ:\nnaive: {naive_out}\nours:  {our_out}")
        print(f"message: {len(body)} bytes on the wire, mapped document {len(orjson.dumps(our_out))} bytes")

        results: dict[str, Any] = {"message_bytes": len(body), "target_per_core": TARGET}
        base = rate(naive, body, args.seconds, args.rounds)
        results.update(naive_msg_s=round(base.wall), naive_cpu_msg_s=round(base.cpu))
        print(f"naive baseline    {base.line()}")
        kinder = rate(naive_pipeline(mapping_doc, schema, ref_registry, mapping.functions, reuse_validator=True),
                      body, args.seconds, args.rounds)
        results.update(naive_reused_validator_msg_s=round(kinder.wall),
                       naive_reused_validator_cpu_msg_s=round(kinder.cpu))
        print(f"naive, validator built once  {kinder.line()}")
        fast = rate(ours, body, args.seconds, args.rounds)
        results.update(ironbus_msg_s=round(fast.wall), ironbus_cpu_msg_s=round(fast.cpu),
                       ratio_vs_naive=round(fast.wall / base.wall, 1), cpu_ratio_vs_naive=round(fast.cpu / base.cpu, 1))
        print(f"ironbus steps     {fast.line()}")
        print(f"                  x{fast.wall / base.wall:.0f} vs naive (wall), x{fast.cpu / base.cpu:.0f} (cpu); "
              f"{fast.cpu / TARGET:.0%} of the {TARGET:,}/core target (cpu)")
        decoded = orjson.loads(body)["data"]
        mapping_only = rate(lambda b: mapping.apply(decoded), body, args.seconds, args.rounds)
        results.update(map_only_msg_s=round(mapping_only.wall), map_only_cpu_msg_s=round(mapping_only.cpu))
        print(f"  Mapping.apply   {mapping_only.line()}")
        if through_pipeline is not None:
            piped = rate(through_pipeline, body, args.seconds, args.rounds)
            results.update(pipeline_msg_s=round(piped.wall), pipeline_cpu_msg_s=round(piped.cpu),
                           pipeline_ratio_vs_naive=round(piped.wall / base.wall, 1))
            print(f"Pipeline.process  {piped.line()}")
            print(f"                  x{piped.wall / base.wall:.0f} vs naive (wall); "
                  f"{piped.cpu / TARGET:.0%} of target (cpu)")
        else:
            print("Pipeline.process: bus.pipeline not available, skipped")
        results["meets_target_cpu"] = min(v for k, v in results.items()
                                          if k in ("ironbus_cpu_msg_s", "pipeline_cpu_msg_s")) >= TARGET
        if args.profile:
            profile(ours, body)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
