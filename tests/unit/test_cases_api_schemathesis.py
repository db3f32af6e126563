"""Schemathesis against the partner API's own OpenAPI document: for every documented operation,
generated requests (valid and invalid) as an administrator and as a restricted partner's agent,
and every answer checked against the document: its status is documented, its content type and
body match the documented schema, and it is never a 500.

Bounded: a few examples per operation and role (about 30 s in all). The org holds a labelled
message, a case, a reply and a second partner, so lists answer real objects in every shape
(a non-administrator's partner directory, the sent folder's replies)."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.cases.api import document
from shared.settings import Settings
from tests.cases_helpers import CasesWorld


def negative_data_refused(ctx, response, case):
    """schemathesis' negative_data_rejection, with 413 among the refusals: a body over the
    limit is refused before it is read (documented on every operation with a body), and the
    generator makes such bodies for size-limited fields (the answers' CSV import)."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_refused,
    allow_header_conformance,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemathesis")
    world = CasesWorld(Settings(data_dir=folder, namespace=f"t{uuid.uuid4().hex[:10]}"))
    label = world.label("violence")
    helpline = world.partner("Helpline", restricted=True, labels=(label,))
    world.partner("Other")
    agent = world.user(helpline, name="Ana")
    message = world.message([label])
    case = world.open_case(agent, message, helpline)
    world.ok(world.post(agent, f"/api/v1/cases/{case['id']}/reply", {"text": "hello"}), 201)
    world.ok(
        world.post(agent, f"/api/v1/messages/{world.message([label])}/reply", {"text": "hi"}), 201
    )
    world.ok(world.post(world.admin, f"/api/v1/cases/{case['id']}/notes", {"note": "seen"}), 201)
    world.people = {"admin": world.admin, "agent": agent}
    yield world
    world.close()


# The document the app serves at /api/v1/openapi.json (a pure function of the code). Loaded from
# the dict rather than through a fixture: schemathesis' lazy fixture loader does not work with
# pytest 9.2 (it sets a private node attribute that is gone).
schema = schemathesis.openapi.from_dict(document())


BOUNDED = settings(
    max_examples=8,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@BOUNDED
def test_every_answer_to_an_administrator_conforms_to_the_document(case, api):
    case.call_and_validate(app=api.app, headers=api.people["admin"].headers, checks=CHECKS)


@schema.parametrize()
@BOUNDED
def test_every_answer_to_a_restricted_agent_conforms_to_the_document(case, api):
    case.call_and_validate(app=api.app, headers=api.people["agent"].headers, checks=CHECKS)


@pytest.mark.parametrize(
    "role, method, path, query",
    [
        ("agent", "GET", "/api/v1/partners", None),  # the directory of other partners
        ("admin", "GET", "/api/v1/partners", None),
        ("agent", "GET", "/api/v1/messages", {"folder": "sent"}),  # replies
        ("admin", "GET", "/api/v1/messages", {"folder": "inbox"}),
        ("admin", "PATCH", "/api/v1/org", None),  # no body: nothing to change
        ("admin", "GET", "/metrics", None),  # not on this port: 404
    ],
)
def test_answers_of_every_shape_conform(api, role, method, path, query):
    """Generation may miss a shape: these requests answer each one for certain."""
    case = schema[path][method].Case(query=query)
    response = case.call_and_validate(app=api.app, headers=api.people[role].headers, checks=CHECKS)
    assert response.status_code in (200, 404)
    if query == {"folder": "sent"}:
        assert response.json()["items"], "the seeded reply is in the sent folder"


def test_status_codes_the_servers_give_are_documented(api):
    """405 with Allow, 413 over the body limit: documented on every operation they can hit."""
    admin = api.people["admin"].headers
    refused = schema["/api/v1/org"]["PATCH"].Case(body={"name": "x" * (1024 * 1024 + 1)})
    too_large = refused.call_and_validate(app=api.app, headers=admin, checks=CHECKS)
    assert too_large.status_code == 413
    wrong_method = api.client.delete("/api/v1/org", headers=admin)
    assert wrong_method.status_code == 405
    documented = document()["paths"]["/api/v1/org"]
    assert {"405", "503"} <= set(documented["get"]["responses"])
    assert {"405", "413", "503"} <= set(documented["patch"]["responses"])
