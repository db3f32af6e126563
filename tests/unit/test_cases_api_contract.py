"""The cases API's contract: the OpenAPI document matches the routes both ways, bad input is
a 4xx in the one error shape (never a 500), probes, and the app factory."""

from __future__ import annotations

import copy
import re

import pytest

from services.cases.api import OPERATIONS, document
from services.cases.app import create_app
from tests.cases_helpers import DocumentedClient, new_uuid

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def url_map_operations(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(("ui.", "ui_")):
            continue  # the web pages are not the API
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found |= {(method.lower(), path) for method in rule.methods - IGNORED_METHODS}
    return found


def test_the_openapi_document_lists_exactly_the_routes(world):
    served = world.ok(world.client.get("/api/v1/openapi.json"))  # no token needed
    assert served["openapi"].startswith("3.")
    documented = {(method, path) for path, ops in served["paths"].items() for method in ops}
    routes = url_map_operations(world.app)
    assert documented - routes == set(), "documented but not served"
    assert routes - documented == set(), "served but not documented"


def test_the_document_is_valid_openapi_3():
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    validate(document())
    broken = copy.deepcopy(document())
    broken["paths"]["/api/v1/me"]["get"]["responses"]["200"].pop("description")
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_route_is_declared_with_its_operation(world):
    """Routes come only from ``route``: each endpoint of the API blueprint has its operation."""
    declared = {(op.method, op.path) for op in OPERATIONS}
    for rule in world.app.url_map.iter_rules():
        if rule.endpoint.startswith("cases."):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            for method in rule.methods - IGNORED_METHODS:
                assert (method.lower(), path) in declared, rule.rule


def test_every_documented_body_and_answer_is_described(world):
    doc = document()
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                ref = (
                    response.get("content", {})
                    .get("application/json", {})
                    .get("schema", {})
                    .get("$ref")
                )
                if ref:
                    assert ref.rsplit("/", 1)[-1] in schemas, (method, path, status)
            if method in ("post", "put", "patch") and "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert body["type"] == "object" and body["additionalProperties"] is False
    message = schemas["MessageView"]["properties"]
    assert message["contact"] == {"$ref": "#/components/schemas/ContactView"}
    label_body = doc["paths"]["/api/v1/labels"]["post"]["requestBody"]
    assert label_body["content"]["application/json"]["schema"]["required"] == ["name"]
    assert len(OPERATIONS) == len({(op.method, op.path) for op in OPERATIONS})


JUNK_BODIES = [
    b"{not json",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b'{"unexpected": true}',
    b'{"text": "a\\u0000b", "note": "\\ud800", "summary": 12, "name": ["x"], "labels": "x"}',
    b'{"messages": [null, 5], "action": "explode", "label": {"x": 1}}',
    b'{"partner": 99999999999999999999999, "user": false, "rule": [{"type": "keywords"}]}',
    b'{"name": "' + b"x" * 5000 + b'", "email": "not-an-email", "role": "emperor"}',
    b'{"warning_days": -1, "timezone": "../../etc/passwd", "suspend_groups": "g"}',
    b'{"warning_days": NaN, "note": Infinity}',
    b"[" * 1000 + b"]" * 1000,  # deeper than the JSON decoder recurses
    b'{"note": ' * 1000 + b"1" + b"}" * 1000,
]


@pytest.fixture
def ids_of(world):
    label = world.label()
    partner = world.partner(labels=(label,))
    message = world.message([label])
    case = world.open_case(world.admin, world.message([label]), partner)
    notification = "n-unknown"
    export = world.export(world.admin, "cases", "xlsx")
    return {
        "partner_id": partner,
        "user_id": world.admin.id,
        "token_id": "t-unknown",
        "label_id": label,
        "message_id": message,
        "case_id": case["id"],
        "notification_id": notification,
        "answer_id": world.ok(
            world.post(world.admin, "/api/v1/answers", {"question": "q?", "answer": "a"}), 201
        )["id"],
        "export_id": export["id"],
    }


def test_junk_bodies_get_a_4xx_in_the_error_shape_never_a_500(world, ids_of):
    checked = 0
    for method, path in sorted(url_map_operations(world.app)):
        if method not in ("post", "put", "patch"):
            continue
        url = path.format(**ids_of)
        for body in JUNK_BODIES:
            response = world.client.open(
                url,
                method=method.upper(),
                data=body,
                headers=world.admin.headers | {"Content-Type": "application/json"},
            )
            where = (method, path, body[:60], response.status_code, response.json)
            if response.status_code >= 400:
                assert response.status_code < 500, where
                assert set(response.json) <= {"error", "message", "fields"}, where
                assert response.json["error"].isupper(), where
            checked += 1
    assert checked > 150


def test_invalid_bodies_name_their_fields(world, ids_of):
    response = world.post(
        world.admin, "/api/v1/labels", {"name": "", "synced": "perhaps", "colour": "red"}
    )
    assert response.status_code == 400 and response.json["error"] == "INVALID_REQUEST"
    assert set(response.json["fields"]) == {"name", "synced", "colour"}
    not_json = world.client.post("/api/v1/labels", data=b"{", headers=world.admin.headers)
    assert not_json.status_code == 400 and not_json.json["error"] == "INVALID_JSON"


@pytest.mark.parametrize(
    "body", [b"[" * 1000 + b"]" * 1000, b'{"a": ' * 1000 + b"1" + b"}" * 1000, b'{"a": NaN}']
)
def test_bodies_the_decoder_refuses_are_invalid_json_for_an_agent_too(world, body):
    agent = world.user(world.partner())
    paths = document()["paths"]
    checked = 0
    for method, path in sorted(url_map_operations(world.app)):
        if "requestBody" not in paths[path][method] or "{" in path:
            continue
        response = world.client.open(path, method=method.upper(), data=body, headers=agent.headers)
        assert response.status_code == 400, (method, path, response.status_code)
        assert response.json["error"] == "INVALID_JSON", (method, path, response.json)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"folder": "spam"}, "folder"),
        ({"after": "yesterday"}, "after"),
        ({"simulation": "maybe"}, "simulation"),
        ({"colour": "red"}, "colour"),
        ({"q": "a\x00b"}, "q"),
        ({"label": "x" * 100}, "label"),
    ],
)
def test_bad_queries_get_400_naming_the_parameter(world, query, field):
    response = world.get(world.admin, "/api/v1/messages", **query)
    assert response.status_code == 400 and field in response.json["fields"]


def test_ids_postgresql_cannot_compare_are_simply_not_found(world):
    for path in (
        "/api/v1/messages/a%00b",
        "/api/v1/cases/" + "x" * 100,
        "/api/v1/labels/%ED%A0%80",
    ):
        response = world.client.get(path, headers=world.admin.headers)
        assert response.status_code == 404 and response.json["error"].endswith("NOT_FOUND")


def test_wrong_method_and_unknown_route_answer_json(world):
    assert world.client.delete("/api/v1/org", headers=world.admin.headers).status_code == 405
    assert world.client.get("/api/v1/nope", headers=world.admin.headers).json["error"] == (
        "NOT_FOUND"
    )


def test_probes(world):
    assert world.client.get("/healthz").json == {"status": "ok"}
    assert world.client.get("/readyz").json == {"status": "ready"}


def test_database_down_answers_503(settings):
    down = settings.with_(database_url="postgresql+psycopg://postgres@127.0.0.1:9/none")
    app = create_app(down)
    client = app.test_client()
    try:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json["error"] == "SERVICE_UNAVAILABLE"
        denied = client.get("/api/v1/me", headers={"Authorization": "Bearer x"})
        assert denied.status_code == 503
    finally:
        app.extensions["upartners.store"].db.dispose()


def test_importing_the_app_touches_nothing(settings):
    import importlib

    import services.cases.app as module

    importlib.reload(module)
    assert not settings.data_dir.exists()
    app = module.create_app(settings)
    try:
        assert app.extensions["upartners.store"].service == "cases"
    finally:
        app.extensions["upartners.store"].db.dispose()


def test_answers_are_never_cached_and_never_sniffed(world, ids_of):
    checked = 0
    for method, path in sorted(url_map_operations(world.app)):
        if method != "get" or not path.startswith("/api/v1/"):
            continue
        response = world.client.get(path.format(**ids_of), headers=world.admin.headers)
        where = (path, response.status_code)
        assert response.headers["Cache-Control"] == "no-store", where
        assert response.headers["X-Content-Type-Options"] == "nosniff", where
        checked += 1
    assert checked > 15
    new_token = world.post(world.admin, f"/api/v1/users/{world.admin.id}/tokens", {})
    assert new_token.status_code == 201 and new_token.headers["Cache-Control"] == "no-store"
    refused = world.client.get("/api/v1/me")  # no token: 401, not cached either
    assert refused.status_code == 401 and refused.headers["Cache-Control"] == "no-store"
    wrong = world.client.delete("/api/v1/me", headers=world.admin.headers)
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_a_body_is_documented_as_required_exactly_where_an_empty_one_is_refused(world, ids_of):
    paths = document()["paths"]
    checked = 0
    for method, path in sorted(url_map_operations(world.app)):
        body = paths[path][method].get("requestBody")
        if body is None:
            continue
        url = path.format(**ids_of)
        response = world.client.open(url, method=method.upper(), headers=world.admin.headers)
        refused = response.status_code == 400 and response.json["error"] == "INVALID_REQUEST"
        assert refused == body["required"], (method, path, response.status_code, response.json)
        checked += 1
    assert checked > 15


def test_every_operation_answers_as_documented_at_least_once(world):
    """A tour of the whole API through the test client that validates every answer against the
    document (tests/cases_helpers.py): each documented operation must succeed once."""
    DocumentedClient.answered.clear()
    admin = world.admin
    label = world.label("tour")
    partner = world.partner("Tour partner", restricted=True, labels=(label,))
    agent = world.user(partner, name="Tina")
    message = world.message([label])
    other = world.message([label], contact=new_uuid())

    def ok(person, method, path, body=None, **query):
        response = world.call(person, method, f"/api/v1{path}", body, **query)
        assert response.status_code < 300, (method, path, response.status_code, response.json)
        return response.json

    ok(admin, "GET", "/me")
    ok(admin, "GET", "/org")
    ok(admin, "PATCH", "/org", {"timezone": "Africa/Maputo"})
    ok(admin, "GET", "/org/catalog")
    ok(admin, "GET", "/partners")
    ok(admin, "GET", f"/partners/{partner}")
    ok(admin, "PATCH", f"/partners/{partner}", {"description": "on tour"})
    ok(admin, "GET", "/users")
    ok(admin, "GET", f"/users/{agent.id}")
    ok(admin, "PATCH", f"/users/{agent.id}", {"name": "Tina T."})
    ok(admin, "GET", f"/users/{agent.id}/tokens")
    token = ok(admin, "POST", f"/users/{agent.id}/tokens", {"description": "spare"})
    ok(admin, "DELETE", f"/users/{agent.id}/tokens/{token['id']}")
    ok(admin, "POST", f"/users/{agent.id}/sign-in-link")
    ok(admin, "GET", "/labels")
    ok(admin, "GET", f"/labels/{label}")
    ok(admin, "PATCH", f"/labels/{label}", {"description": "for the tour"})
    spare = ok(admin, "POST", "/labels", {"name": "spare"})
    ok(admin, "DELETE", f"/labels/{spare['id']}")
    ok(agent, "GET", "/messages")
    ok(agent, "GET", "/messages/counts")
    ok(agent, "GET", f"/messages/{message}")
    ok(agent, "GET", f"/messages/{message}/history")
    ok(agent, "POST", f"/messages/{message}/actions", {"action": "flag"})
    ok(agent, "POST", "/messages/actions", {"action": "unflag", "messages": [message]})
    ok(agent, "POST", f"/messages/{message}/lock")
    ok(agent, "DELETE", f"/messages/{message}/lock")
    answer = ok(
        admin, "POST", "/answers", {"question": "Hi?", "answer": "Hello", "labels": [label]}
    )
    ok(admin, "POST", "/answers/import", {"csv": "question,answer,labels\nBye?,Bye,tour\n"})
    ok(agent, "GET", "/answers", q="hel", language="pt")
    ok(agent, "GET", f"/answers/{answer['id']}", language="es")
    ok(admin, "PATCH", f"/answers/{answer['id']}", {"translations": []})
    ok(agent, "POST", f"/messages/{other}/reply", {"text": "hello", "answer": answer["id"]})
    ok(admin, "DELETE", f"/answers/{answer['id']}")
    case = ok(agent, "POST", "/cases", {"summary": "tour", "partner": partner, "message": message})
    path = f"/cases/{case['id']}"
    ok(agent, "GET", "/cases")
    ok(agent, "GET", path)
    ok(agent, "GET", f"{path}/timeline")
    ok(agent, "POST", f"{path}/notes", {"note": "seen"})
    ok(agent, "PUT", f"{path}/labels", {"labels": [label]})
    ok(agent, "PUT", f"{path}/summary", {"summary": "the tour"})
    ok(agent, "POST", f"{path}/reply", {"text": "still there?"})
    ok(admin, "POST", f"{path}/reassign", {"partner": partner, "user": agent.id})
    ok(admin, "PUT", f"{path}/watch")
    ok(agent, "POST", f"{path}/close", {"note": "done"})
    ok(agent, "POST", f"{path}/reopen", {})
    ok(admin, "DELETE", f"{path}/watch")
    notification = ok(agent, "GET", "/notifications")["items"][0]
    ok(agent, "POST", f"/notifications/{notification['id']}/read")
    ok(agent, "POST", "/notifications/read")
    ok(admin, "GET", "/stats/org", **{"from": "2026-11-01", "to": "2026-12-31", "period": "month"})
    ok(agent, "GET", f"/stats/partners/{partner}")
    ok(agent, "GET", f"/stats/partners/{partner}/replies")
    ok(agent, "GET", f"/stats/users/{agent.id}")
    ok(agent, "GET", f"/stats/labels/{label}")
    ok(agent, "GET", "/stats/labels")
    ok(admin, "GET", "/stats/activity")
    ok(admin, "POST", "/partners", {"name": "Tour 2"})
    ok(admin, "POST", "/users", {"name": "U", "email": "u@tour.example", "role": "administrator"})
    export = world.export(agent, "messages", "xlsx", q="hello")
    ok(agent, "GET", "/exports")
    ok(agent, "GET", f"/exports/{export['id']}")
    ok(agent, "GET", f"/exports/{export['id']}/file")
    ok(None, "GET", "/openapi.json")
    world.client.get("/healthz")
    world.client.get("/readyz")

    succeeded = {(m, p) for m, p, status in DocumentedClient.answered if status < 300}
    documented = {(m, p) for p, ops in document()["paths"].items() for m in ops}
    assert documented - succeeded == {("get", "/metrics")}  # only on the ops port
