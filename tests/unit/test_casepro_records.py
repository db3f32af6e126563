"""The records an import reads: CasePro's role order and its follow-up flow setting."""

from __future__ import annotations

import json

import pytest

from services.cases.casepro.records import FlowRef, parse_follow_up_flow, role_of


@pytest.mark.parametrize(
    ("codes", "role"),
    [
        ("A", "administrator"),
        ("AM", "administrator"),
        ("YA", "administrator"),
        ("M", "manager"),
        ("YM", "manager"),
        ("Y", "agent"),
        ("", None),
    ],
)
def test_roles_are_checked_administrator_then_manager_then_analyst(codes, role):
    assert role_of(codes) == role


def test_the_follow_up_flow_is_a_json_string_inside_the_config():
    encoded = json.dumps({"uuid": "f-1", "name": "Acompanhamento"})
    assert parse_follow_up_flow(encoded) == FlowRef("f-1", "Acompanhamento")
    assert parse_follow_up_flow({"uuid": "f-1", "name": "Acompanhamento"}) == FlowRef(
        "f-1", "Acompanhamento"
    )
    assert parse_follow_up_flow(json.dumps({"uuid": "f-1"})) == FlowRef("f-1", "")


@pytest.mark.parametrize("value", [None, "", "null", "{not json", "[]", '{"name": "x"}', 3])
def test_no_follow_up_flow(value):
    assert parse_follow_up_flow(value) is None
