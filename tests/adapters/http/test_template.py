"""URL/header templates with JMESPath placeholders."""

from __future__ import annotations

import pytest

from adapters.http.template import Template, TemplateSyntaxError
from bus.errors import PermanentError


def test_placeholders_literals_and_escaped_braces() -> None:
    template = Template("/o/{order.id}/l/{lines[0].n}?x={{raw}}")

    assert template.fields == ["order.id", "lines[0].n"]
    assert template.render({"order": {"id": "7"}, "lines": [{"n": 2}]}) == "/o/7/l/2?x={raw}"


def test_path_rendering_encodes_each_value_as_one_segment() -> None:
    assert Template("/o/{id}").render_path({"id": "a/b?c d"}) == "/o/a%2Fb%3Fc%20d"
    assert Template("/o/{flag}/{n}").render_path({"flag": True, "n": 1.5}) == "/o/true/1.5"


def test_jmespath_braces_inside_placeholder() -> None:
    assert Template("{join('-', values({a: a, b: b}))}").render({"a": "x", "b": "y"}) == "x-y"


def test_null_value_is_permanent() -> None:
    with pytest.raises(PermanentError, match=r"\{id\} is null or missing"):
        Template("/o/{id}").render({})


@pytest.mark.parametrize(("text", "message"), [
    ("/o/{id", "unclosed"),
    ("/o/id}", "unmatched"),
    ("/o/{}", "empty"),
    ("/o/{a[[}", "bad JMESPath"),
])
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message):
        Template(text)
