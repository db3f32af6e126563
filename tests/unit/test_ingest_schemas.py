"""The webhook schemas' quick road (services.ingest.schemas ``_quick_load``) gives what
marshmallow gives, on every fixture and on bodies with each part removed or of a wrong type."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from services.ingest import schemas

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
BODIES = {
    "editor_default.json": schemas.EditorBodySchema(),
    "resthook.json": schemas.ResthookBodySchema(),
    "resthook_legacy_path.json": schemas.ResthookBodySchema(),
    "upartners_template.json": schemas.UPartnersBodySchema(),
}
ODD_VALUES = [None, 42, 4.5, True, "", "   ", "x" * 70, [], [1, "a"], {}, {"uuid": 7}]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON document (list items by index)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        found.append((*prefix, key))
        if isinstance(child, dict | list):
            found += paths(child, (*prefix, key))
    return found


def variants(document: dict):
    """The document itself, then with each part removed and with each odd value in its place."""
    yield "as sent", document
    for path in paths(document):
        parent_path, key = path[:-1], path[-1]
        if isinstance(key, str):
            changed = copy.deepcopy(document)
            parent = changed
            for step in parent_path:
                parent = parent[step]
            del parent[key]
            yield f"{path} removed", changed
        for value in ODD_VALUES:
            changed = copy.deepcopy(document)
            parent = changed
            for step in parent_path:
                parent = parent[step]
            parent[key] = value
            yield f"{path} = {value!r}", changed


def outcome(schema, document) -> tuple[str, Any]:
    try:
        return "loaded", schema.load(document)
    except ValidationError as exc:
        return "refused", exc.messages


@pytest.mark.parametrize("name", sorted(BODIES))
def test_the_quick_road_loads_what_marshmallow_loads(name, monkeypatch):
    schema = BODIES[name]
    document = json.loads((FIXTURES / name).read_text())
    cases = list(variants(document))
    quick = [outcome(schema, copy.deepcopy(d)) for _, d in cases]
    monkeypatch.setattr(schemas, "_quick_load", lambda _schema, _data: None)
    for (what, body), got in zip(cases, quick, strict=True):
        assert got == outcome(schema, body), what
    assert len(cases) > 100  # every part of the fixture was varied
    assert sum(kind == "refused" for kind, _ in quick) > 10  # and some variants are refused


def test_the_quick_road_is_taken_for_a_well_formed_body(monkeypatch):
    calls = []
    real = schemas._quick_load

    def counting(schema, data):
        loaded = real(schema, data)
        calls.append(loaded is not None)
        return loaded

    monkeypatch.setattr(schemas, "_quick_load", counting)
    document = json.loads((FIXTURES / "upartners_template.json").read_text())
    schemas.UPartnersBodySchema().load(document)
    assert calls and all(calls)  # the body's and every nested load's, none fell back
