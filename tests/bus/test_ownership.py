"""``master_data:`` in routes.yaml: ownership per entity and attribute, checked by lint against systems and schemas."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bus.config import load_config
from bus.lint import lint


def routes(tmp_path: Path, master_data: str, route_extra: str = "") -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
          scm: {adapter: stub}
          srm: {adapter: stub}
        routes:
          - name: sync
            from: crm.party_changed
            to: [scm.upsert_party]
        """) + route_extra + "master_data:\n" + textwrap.indent(textwrap.dedent(master_data), "  "))
    return path


def errors(path: Path) -> list[str]:
    return [f"{i.location.line if i.location else '?'}: {i.message}" for i in lint(path) if i.severity == "error"]


def test_a_sound_declaration_loads_with_attribute_owners(tmp_path: Path) -> None:
    path = routes(tmp_path, """\
        material:
          owner: scm
          systems: [crm, scm, srm]
          attributes: {list_price: crm}
          compare: [name, unit, active]
        """)
    assert errors(path) == []
    material = load_config(path).master_data["material"]
    assert (material.owner_of("name"), material.owner_of("list_price")) == ("scm", "crm")
    assert material.owned_by("crm", ["name", "list_price", "unit"]) == ["list_price"]
    assert material.schema == "material"


def test_lint_names_each_mistake_with_its_line(tmp_path: Path) -> None:
    path = routes(tmp_path, """\
        customer:
          owner: erp
          systems: [crm, scn]
          attributes: {lead_time: srm, nmae: crm}
        widget:
          owner: crm
          systems: [crm]
        """)
    found = errors(path)
    assert any("systems: unknown system 'scn'; did you mean 'scm'" in e for e in found), found
    assert any("owner: 'erp' is not one of the systems that hold the customer" in e for e in found), found
    assert any("attributes.lead_time: 'srm' does not hold the customer" in e for e in found), found
    assert any("unknown attribute 'nmae'; did you mean 'name'" in e for e in found), found
    assert any("master_data.widget: no canonical schema 'widget'" in e for e in found), found
    assert all(not e.startswith("?") for e in found), found


def test_a_route_link_needs_a_key_and_a_declared_entity(tmp_path: Path) -> None:
    path = routes(tmp_path, "customer: {owner: crm, systems: [crm, scm]}\n", textwrap.indent(
        "- name: link-without-key\n  from: crm.other\n  link: supplier\n  to: [scm.x]\n", "  "))
    text = (tmp_path / "routes.yaml").read_text().replace("master_data:", "master_data:", 1)
    (tmp_path / "routes.yaml").write_text(text)
    issues = lint(path)
    assert any(i.severity == "error" and "link needs 'key'" in i.message for i in issues), issues
    assert any(i.severity == "warning" and "master_data does not declare" in i.message for i in issues), issues
