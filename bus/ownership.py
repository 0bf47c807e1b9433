"""Master-data ownership, as routes.yaml declares it under ``master_data:``.

For each entity (``customer``, ``material``, ``supplier`` or an integrator's own) one system *owns the record*:
it creates, renames and deactivates it, and every other system that holds the entity follows through the sync
routes. Single attributes may belong to another system (the SRM owns a material's supplier lead time); an
attribute not named belongs to the record's owner. ``ironbus lint`` checks the declaration against the systems
and the entity's canonical schema; ``ironbus xref check`` compares the owned attributes across systems.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.errors import Location, UnknownNameError

__all__ = ["DEFAULT_COMPARE", "DEFAULT_MATCH", "EntityOwnership", "ownership_problems", "parse_ownership"]

#: What ``xref check`` compares when a declaration names nothing: the name, and whether the record is active.
DEFAULT_COMPARE: tuple[str, ...] = ("name", "active")
#: Business keys ``xref match`` tries, strongest first, before normalised names.
DEFAULT_MATCH: tuple[str, ...] = ("code", "vat_id", "gtin", "email")


@dataclass(frozen=True)
class EntityOwnership:
    """Who owns one entity and its attributes."""

    entity: str
    owner: str
    systems: tuple[str, ...]
    schema: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    compare: tuple[str, ...] = DEFAULT_COMPARE
    match: tuple[str, ...] = ()  # as declared; empty: DEFAULT_MATCH (see match_keys)
    location: Location | None = None
    locations: Mapping[str, Location] = field(default_factory=dict)

    def owner_of(self, attribute: str) -> str:
        """The system whose value of ``attribute`` is the truth."""
        return self.attributes.get(attribute, self.owner)

    def match_keys(self) -> tuple[str, ...]:
        """The business keys ``xref match`` tries, strongest first."""
        return self.match or DEFAULT_MATCH

    def owned_by(self, system: str, attributes: Sequence[str]) -> list[str]:
        """Those of ``attributes`` that ``system`` owns."""
        return [a for a in attributes if self.owner_of(a) == system]


def parse_ownership(doc: Mapping[str, Any] | None, locate: Any) -> dict[str, EntityOwnership]:
    """The ``master_data:`` block of routes.yaml (already structurally valid) as :class:`EntityOwnership` values.

    ``locate(path)`` gives the :class:`Location` of a path in routes.yaml, for lint messages.
    """
    out: dict[str, EntityOwnership] = {}
    for entity, body in (doc or {}).items():
        out[entity] = EntityOwnership(
            entity=entity, owner=str(body["owner"]), systems=tuple(str(s) for s in body["systems"]),
            schema=str(body.get("schema") or entity), attributes={str(k): str(v) for k, v in
                                                                  (body.get("attributes") or {}).items()},
            compare=tuple(body.get("compare") or DEFAULT_COMPARE), match=tuple(body.get("match") or ()),
            location=locate(["master_data", entity]),
            locations={k: loc for k in body if (loc := locate(["master_data", entity, k])) is not None},
        )
    return out


def _has_path(schema: Mapping[str, Any], path: list[str]) -> bool:
    """Whether a nested attribute (``suppliers.lead_time_days``) exists below ``schema`` (objects, arrays)."""
    for name in path:
        while isinstance(schema.get("items"), Mapping):
            schema = schema["items"]
        child = (schema.get("properties") or {}).get(name)
        if not isinstance(child, Mapping):
            return False
        schema = child
    return True


def ownership_problems(ownership: EntityOwnership, systems: Sequence[str],
                       properties: Mapping[str, Any] | None) -> list[tuple[str, Location | None]]:
    """What is wrong with one declaration: unknown systems, an owner that does not hold the entity, attributes
    the canonical schema does not have. ``properties`` is the schema's ``properties`` (None: the schema is missing,
    reported as such); a dotted attribute (``suppliers.lead_time_days``) names one inside a list or object."""
    found: list[tuple[str, Location | None]] = []
    where = ownership.locations
    entity = ownership.entity
    for name in ownership.systems:
        if name not in systems:
            found.append((f"master_data.{entity}.systems: {UnknownNameError('system', name, systems).message}",
                          where.get("systems", ownership.location)))
    if ownership.owner not in ownership.systems:
        found.append((f"master_data.{entity}.owner: {ownership.owner!r} is not one of the systems that hold the "
                      f"{entity} ({', '.join(ownership.systems)}); add it to 'systems'",
                      where.get("owner", ownership.location)))
    for attribute, system in ownership.attributes.items():
        if system not in ownership.systems:
            found.append((f"master_data.{entity}.attributes.{attribute}: {system!r} does not hold the {entity}; "
                          f"expected one of {', '.join(ownership.systems)}",
                          where.get("attributes", ownership.location)))
    if properties is None:
        found.append((f"master_data.{entity}: no canonical schema {ownership.schema!r} (schemas/{ownership.schema}"
                      ".json); set 'schema:' to the entity's schema", where.get("schema", ownership.location)))
        return found
    for label, names in (("attributes", list(ownership.attributes)), ("compare", list(ownership.compare)),
                         ("match", list(ownership.match))):
        for attribute in names:
            if label == "match" and attribute == "code":
                continue  # every record has a code, whatever the schema calls it
            head, _, rest = attribute.partition(".")
            known = properties.get(head)
            if known is not None and (not rest or _has_path(known, rest.split("."))):
                continue
            unknown = UnknownNameError("attribute", attribute, list(properties))
            found.append((f"master_data.{entity}.{label}: {unknown.message} (schema {ownership.schema!r})",
                          where.get(label, ownership.location)))
    return found
