"""URL/header templates: the one ``{{ jmespath }}`` syntax in url mode, and the old single-brace form read
(and warned on) during its deprecation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.http.template import LEGACY_REMOVED_IN, Template, TemplateSyntaxError, legacy_rewrite, url_template
from adapters.templates import Template as TextTemplate
from bus.errors import ConfigError, PermanentError
from bus.lint import lint


def test_placeholders_and_literal_braces() -> None:
    template = url_template("/o/{{ order.id }}/l/{{ lines[0].n }}?x={{ '{' }}raw}", "path")

    assert template.fields == ["order.id", "lines[0].n", "'{'"]
    assert template.render({"order": {"id": "7"}, "lines": [{"n": 2}]}) == "/o/7/l/2?x={raw}"
    # single braces are literal in the one syntax; in an http template, while the old form is still read,
    # a single '{' marks the old form, so a literal one there is written {{ '{' }}
    assert TextTemplate("{ {{ a }} }").render({"a": 1}) == "{ 1 }"


def test_url_and_text_templates_are_one_class() -> None:
    assert Template is TextTemplate
    # url mode writes a list as JSON, text mode as words; the parse is the same
    assert url_template("{{ ids }}", "q").render({"ids": [1, 2]}) == "[1,2]"
    assert TextTemplate("{{ ids }}").render({"ids": [1, 2]}) == "1, 2"


def test_path_rendering_encodes_each_value_as_one_segment() -> None:
    assert url_template("/o/{{ id }}", "p").render_path({"id": "a/b?c d"}) == "/o/a%2Fb%3Fc%20d"
    assert url_template("/o/{{flag}}/{{ n }}", "p").render_path({"flag": True, "n": 1.5}) == "/o/true/1.5"


def test_jmespath_braces_and_quotes_inside_placeholder() -> None:
    assert url_template("{{ join('-', values({a: a, b: b})) }}", "p").render({"a": "x", "b": "y"}) == "x-y"
    assert url_template("{{{a: a}}}", "p").render({"a": 1}) == '{"a":1}'
    assert url_template("x{{ '}}' }}", "p").render({}) == "x}}"


def test_null_value_is_permanent_and_names_the_template() -> None:
    with pytest.raises(PermanentError, match=r"settings/operations/get/path: \{\{ id \}\} is null or missing"):
        url_template("/o/{{ id }}", "settings/operations/get/path").render({})


@pytest.mark.parametrize(("text", "message"), [
    ("/o/{{ id", "unclosed"),
    ("/o/{{ }}", "empty"),
    ("/o/{{ a[[ }}", "bad JMESPath"),
    ("/o/{id", "unclosed"),  # the old syntax's errors stay errors
    ("/o/{}", "empty"),
    ("/o/{a[[}", "bad JMESPath"),
])
def test_syntax_errors_name_where(text: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=f"^path: {message}") as caught:
        url_template(text, "path")
    assert isinstance(caught.value, ConfigError)


def test_the_old_single_brace_form_still_means_what_it_meant_and_is_logged() -> None:
    with capture_logs() as logs:
        template = url_template("/o/{order.id}/l/{lines[0].n}?x={{raw}}", "settings/operations/op/path")
    assert template.render({"order": {"id": "7"}, "lines": [{"n": 2}]}) == "/o/7/l/2?x={raw}"
    assert [(e["event"], e["write"]) for e in logs] == [
        ("http.template_deprecated", "/o/{{ order.id }}/l/{{ lines[0].n }}?x={raw}")]


@pytest.mark.parametrize(("old", "new"), [
    ("/orders/{order_id}", "/orders/{{ order_id }}"),
    ("Bearer {token}", "Bearer {{ token }}"),
    ("{join('-', values({a: a}))}", "{{ join('-', values({a: a})) }}"),
    ("/o/{{{id}", "/o/{{ '{' }}{{ id }}"),  # a literal brace before a placeholder would read as '{{'
    ("/orders/{{ order_id }}", None),  # already the one syntax
    ("/static", None),
])
def test_legacy_rewrite_keeps_the_meaning(old: str, new: str | None) -> None:
    assert legacy_rewrite(old) == new
    if new is not None:
        payload = {"order_id": "A/1", "token": "t", "a": "x", "id": 3}
        assert url_template(new, "n").render_path(payload) == url_template(old, "o").render_path(payload)


def test_lint_warns_on_each_old_template_with_file_system_and_rewrite(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent("""\
        systems:
          orders_api:
            adapter: http
            settings:
              base_url: https://api.example.com
              operations:
                update_order:
                  method: PATCH
                  path: /orders/{order_id}
                  headers: {X-Tenant: "{{ tenant }}", X-Order: "{order_id}"}
              polls:
                changed:
                  path: /orders
                  query: {since: "{watermark}"}
                  records: data
                  watermark: {field: updated_at}
        routes:
          - {name: push, from: orders_api.changed, to: [orders_api.update_order]}
        """))
    warnings = [str(issue) for issue in lint(routes) if "deprecated" in issue.message]
    assert warnings == [
        f"{routes}:9:11: warning: system 'orders_api' (adapter 'http'): settings/operations/update_order/path: "
        f"single-brace template '/orders/{{order_id}}' is deprecated and read until ironbus {LEGACY_REMOVED_IN}; "
        "write '/orders/{{ order_id }}'",
        f"{routes}:10:47: warning: system 'orders_api' (adapter 'http'): settings/operations/update_order/headers/"
        f"X-Order: single-brace template '{{order_id}}' is deprecated and read until ironbus {LEGACY_REMOVED_IN}; "
        "write '{{ order_id }}'",
        f"{routes}:14:19: warning: system 'orders_api' (adapter 'http'): settings/polls/changed/query/since: "
        f"single-brace template '{{watermark}}' is deprecated and read until ironbus {LEGACY_REMOVED_IN}; "
        "write '{{ watermark }}'",
    ]
