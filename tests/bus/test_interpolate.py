"""${VAR} interpolation: defaults, the $$ escape, located errors that never show a value, redaction."""

from __future__ import annotations

import pytest

from bus.errors import ConfigError, Location
from bus.interpolate import interpolate, redact
from bus.yamlfile import load_yaml_text


def test_variables_defaults_and_escape() -> None:
    env = {"CRM_URL": "https://crm.example", "EMPTY": ""}
    doc = load_yaml_text(
        'url: "${CRM_URL}/api"\n'
        'db: "${CRM_DB:-crm}"\n'
        'blank: "${UNSET:-}"\n'
        'empty: "${EMPTY:-fallback}"\n'
        'price: "$$5 and $$${CRM_DB:-x}"\n'
        'lone: "costs $5"\n'
        "port: 8069\n"
        'list: ["${CRM_URL}", plain]\n'
    )
    assert interpolate(doc, env) == {
        "url": "https://crm.example/api", "db": "crm", "blank": "",
        "empty": "",  # a set-but-empty variable is used as is; only an unset one takes the default
        "price": "$5 and $x", "lone": "costs $5", "port": 8069, "list": ["https://crm.example", "plain"],
    }


def test_locations_survive_interpolation() -> None:
    doc = load_yaml_text("systems:\n  crm:\n    settings: {url: '${U}'}\n", "r.yaml")
    out = interpolate(doc, {"U": "http://x"})
    assert out["systems"]["crm"]["settings"].key_locations["url"] == Location("r.yaml", 3, 16)


def test_missing_variable_names_variable_and_location() -> None:
    doc = load_yaml_text("systems:\n  crm:\n    settings:\n      user: admin\n      password: '${CRM_PASSWORD}'\n",
                         "routes.yaml")
    with pytest.raises(ConfigError) as caught:
        interpolate(doc, {})
    assert str(caught.value) == ("routes.yaml:5:7: environment variable ${CRM_PASSWORD} is not set "
                                 "(and has no ':-default')")


def test_missing_variable_in_a_list_points_at_the_item() -> None:
    doc = load_yaml_text("hosts:\n  - a\n  - '${HOST_B}'\n", "r.yaml")
    with pytest.raises(ConfigError) as caught:
        interpolate(doc, {})
    assert caught.value.location == Location("r.yaml", 3, 5)


def test_error_text_never_contains_values_of_set_variables() -> None:
    env = {"CRM_USER": "integration-user-7f3a", "CRM_PASSWORD": "s3cr3t-Pa55w0rd"}
    doc = load_yaml_text("user: '${CRM_USER}'\npassword: '${CRM_PASSWORD}'\ntoken: '${CRM_TOKEN}'\n", "r.yaml")
    with pytest.raises(ConfigError) as caught:
        interpolate(doc, env)
    assert "CRM_TOKEN" in str(caught.value)
    for value in env.values():
        assert value not in str(caught.value)


def test_redact_scrubs_interpolated_values() -> None:
    interpolate({"password": "${DB_PASSWORD}", "short": "${SHORT}"}, {"DB_PASSWORD": "hunter2-xyz", "SHORT": "ab"})
    assert redact("login failed for hunter2-xyz@db") == "login failed for ***@db"
    # very short values would blank out ordinary words everywhere, so they are not treated as secrets
    assert redact("ab testing") == "ab testing"
    assert redact("nothing secret here") == "nothing secret here"


def test_plain_dicts_and_lists_are_interpolated_too() -> None:
    assert interpolate({"a": ["${X}", {"b": "${X}"}]}, {"X": "1"}) == {"a": ["1", {"b": "1"}]}
