"""The ingest HTTP API on the embedded default: credentials, answers, bad input, idempotency."""

from __future__ import annotations

import json
import logging

import pytest

from services.ingest import handlers
from shared.events import MESSAGE_RECEIVED, read_event
from tests.ingest_helpers import ORG, counts, fixture, make_ingest, signed_headers

URL = f"/webhooks/{ORG}/flow"


@pytest.fixture
def ingest(settings):
    app, store, secret = make_ingest(settings)
    yield app.test_client(), store, secret
    store.db.dispose()


def token(secret):
    return {"Authorization": f"Token {secret}"}


def stored_events(store):
    with store.db.session() as session:
        rows = session.scalars(select_outbox()).all()
    return [read_event(row.envelope) for row in rows]


def select_outbox():
    from sqlalchemy import select

    from services.ingest.models import Outbox

    return select(Outbox).order_by(Outbox.position)


@pytest.mark.parametrize(
    "name, content_type",
    [
        ("editor_default.json", None),
        ("resthook.json", "application/json"),
        ("resthook_legacy_path.json", "text/plain"),
        ("upartners_template.json", "application/json; charset=utf-8"),
        ("legacy_form.txt", "application/x-www-form-urlencoded"),
    ],
)
def test_each_body_shape_is_accepted_and_emits_message_received(ingest, name, content_type):
    client, store, secret = ingest
    headers = token(secret) | ({"Content-Type": content_type} if content_type else {})
    response = client.post(URL, data=fixture(name), headers=headers)
    assert response.status_code == 200, response.json
    assert response.json["status"] == "accepted"
    [event] = stored_events(store)
    assert event.name == MESSAGE_RECEIVED and event.org == ORG
    assert event.data["message_id"] == response.json["message"]
    assert event.data["contact_uuid"] == "0f025fea-98bb-46bf-a0fe-005db39635cf"
    assert event.data["flow_uuid"] == "7014582e-489a-4049-a03a-d443fa07c6ff"
    assert event.data["text"].startswith("Oi, tô sofrendo bullying")
    # partners never see who wrote: no URN, no phone number, no name on the event
    wire = json.dumps(event.data, default=str)
    assert "5511987654321" not in wire and "Júlia" not in wire and "urn" not in event.data


def test_a_json_body_sent_with_the_form_content_type_is_still_json(ingest):
    client, store, secret = ingest
    headers = token(secret) | {"Content-Type": "application/x-www-form-urlencoded"}
    response = client.post(URL, data=fixture("resthook.json"), headers=headers)
    assert response.status_code == 200
    assert stored_events(store)[0].data["run_uuid"] is not None


def test_upartners_template_carries_groups_fields_and_step(ingest):
    client, store, secret = ingest
    client.post(URL, data=fixture("upartners_template.json"), headers=token(secret))
    [event] = stored_events(store)
    assert event.data["node_uuid"] == "8d9c4bd3-6593-4460-8a15-74230fb4b368"
    assert {g["name"] for g in event.data["contact_groups"]} >= {"São Paulo"}
    assert event.data["contact_fields"]["age"] == "15"
    assert len(event.data["attachments"]) == 2


def test_the_webhook_url_names_the_result_that_holds_the_message(ingest):
    client, store, secret = ingest
    body = {
        "contact": {"uuid": "5d2f1a4e-0000-4000-8000-000000000002", "name": "Ana"},
        "flow": {"uuid": "0b7c8d9e-0000-4000-8000-000000000003", "name": "Enquete"},
        "results": {"message": {"value": "tenho medo"}, "topic": {"value": "2"}},
    }
    for query in ("", "?text=topic"):
        data = json.dumps(body | {"flow": {**body["flow"], "name": query or "plain"}})
        answer = client.post(URL + query, data=data, headers=token(secret))
        assert answer.status_code == 200, answer.json
    assert [e.data["text"] for e in stored_events(store)] == ["tenho medo", "2"]


@pytest.mark.parametrize(
    "headers, query",
    [
        ("x-token", ""),
        ("none", "?token={secret}"),
    ],
)
def test_other_credential_places(ingest, headers, query):
    client, store, secret = ingest
    sent = {"X-UPartners-Token": secret} if headers == "x-token" else {}
    response = client.post(
        URL + query.format(secret=secret), data=fixture("resthook.json"), headers=sent
    )
    assert response.status_code == 200


def test_signed_delivery(ingest):
    client, store, secret = ingest
    body = fixture("resthook.json")
    assert client.post(URL, data=body, headers=signed_headers(secret, body)).status_code == 200


@pytest.mark.parametrize(
    "make_headers",
    [
        lambda secret, body: {},
        lambda secret, body: {"Authorization": "Token wrong"},
        lambda secret, body: {"Authorization": f"Bearer {secret}"},
        lambda secret, body: signed_headers("not-the-secret", body),
        lambda secret, body: signed_headers(secret, body + b" "),  # body changed in transit
        lambda secret, body: signed_headers(secret, body, at=1_000_000),  # replayed long after
        lambda secret, body: {"X-UPartners-Signature": "x", "X-UPartners-Timestamp": "9" * 400},
        lambda secret, body: {"X-UPartners-Signature": "x", "X-UPartners-Timestamp": "9" * 5000},
        lambda secret, body: {"X-UPartners-Signature": "x", "X-UPartners-Timestamp": "-5"},
        lambda secret, body: {"X-UPartners-Signature": "x", "X-UPartners-Timestamp": "1_0"},
    ],
    ids=[
        "none",
        "wrong-token",
        "wrong-scheme",
        "wrong-key",
        "tampered",
        "stale",
        "timestamp-overflows-a-float",
        "timestamp-over-int-digit-limit",
        "timestamp-negative",
        "timestamp-underscore",
    ],
)
def test_wrong_credentials_get_401_and_write_nothing(ingest, make_headers, caplog):
    client, store, secret = ingest
    body = fixture("resthook.json")
    with caplog.at_level("DEBUG"):
        response = client.post(URL, data=body, headers=make_headers(secret, body))
    assert response.status_code == 401
    assert response.json["error"] == "UNAUTHORIZED"
    assert counts(store) == (0, 0)
    # one line saying why, no traceback, never the presented credential
    [record] = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert "invalid credentials" in record.getMessage() and record.exc_info is None
    assert secret not in caplog.text and "wrong" not in caplog.text


def test_another_orgs_secret_is_refused(ingest):
    client, store, _ = ingest
    _, other_secret = handlers.add_secret(store, "other-org")
    response = client.post(URL, data=fixture("resthook.json"), headers=token(other_secret))
    assert response.status_code == 401 and counts(store) == (0, 0)


def test_rotation_keeps_two_secrets_valid_until_one_is_revoked(ingest):
    client, store, old = ingest
    _, new = handlers.add_secret(store, ORG)
    assert client.post(URL, data=fixture("resthook.json"), headers=token(old)).status_code == 200
    assert (
        client.post(URL, data=fixture("editor_default.json"), headers=token(new)).status_code == 200
    )
    old_id = handlers.list_secrets(store, ORG)[0].id
    assert handlers.revoke_secret(store, ORG, old_id)
    assert client.post(URL, data=fixture("resthook.json"), headers=token(old)).status_code == 401
    assert client.post(URL, data=fixture("resthook.json"), headers=token(new)).status_code == 200


def test_a_repeated_delivery_is_stored_once_and_answered_the_same(ingest):
    client, store, secret = ingest
    answers = [
        client.post(URL, data=fixture("resthook.json"), headers=token(secret)).json
        for _ in range(3)
    ]
    assert answers[0] == answers[1] == answers[2]
    assert counts(store) == (1, 1)


def test_body_over_256_kib_gets_413(ingest):
    client, store, secret = ingest
    body = json.loads(fixture("resthook.json"))
    body["padding"] = "x" * (300 * 1024)
    response = client.post(URL, data=json.dumps(body), headers=token(secret))
    assert response.status_code == 413
    assert response.json["error"] == "PAYLOAD_TOO_LARGE"
    assert counts(store) == (0, 0)


@pytest.mark.parametrize(
    "body, field",
    [
        (b"{not json", "_body"),
        (b"[1, 2]", "_body"),
        (b'{"contact": {"uuid": "c"}}', "flow.uuid"),
        (b'{"flow": {"uuid": "f"}}', "contact.uuid"),
        (b'{"contact": {"uuid": "c\\u0000"}, "flow": {"uuid": "f"}}', None),
        (b'{"contact": {"uuid": "c"}, "flow": {"uuid": "f"}, "x": "\\ud800"}', None),
        (b"\xff\xfe\x00", "_body"),
    ],
    ids=["syntax", "not-object", "no-flow", "no-contact", "nul", "lone-surrogate", "not-utf8"],
)
def test_bad_bodies_get_400_naming_the_fields(ingest, body, field):
    client, store, secret = ingest
    response = client.post(URL, data=body, headers=token(secret))
    assert response.status_code == 400
    assert response.json["error"] == "INVALID_WEBHOOK"
    assert response.json["fields"]
    if field:
        assert field in response.json["fields"]
    assert counts(store) == (0, 0)


def test_simulation_deliveries_are_stored_and_marked(ingest):
    client, store, secret = ingest
    headers = token(secret) | {"X-Mailroom-Mode": "simulation", "User-Agent": "Mailroom/9.2.1"}
    assert client.post(URL, data=fixture("resthook.json"), headers=headers).status_code == 200
    [event] = stored_events(store)
    assert event.data["simulation"] is True


def test_unknown_route_and_method_answer_json(ingest):
    client, _, _ = ingest
    assert client.get(URL).status_code == 405
    assert client.get("/nope").json["error"] == "NOT_FOUND"


def test_health_and_readiness(ingest):
    client, _, _ = ingest
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_database_down_answers_503_never_2xx(settings):
    from services.ingest.app import create_app

    down = settings.with_(database_url="postgresql+psycopg://postgres@127.0.0.1:9/none")
    app = create_app(down)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # alive, but not ready
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["error"] == "SERVICE_UNAVAILABLE"
    response = client.post(URL, data=fixture("resthook.json"), headers=token("any"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    app.extensions["upartners.store"].db.dispose()
