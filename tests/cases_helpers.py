"""Factories for the cases service's tests: a migrated app with an org and its administrator,
people and labels made through the API, and the events other services would send, delivered
through the real worker subscriptions (so the inbox ledger is exercised too)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from services.cases import handlers
from services.cases.api import document
from services.cases.app import create_app
from services.cases.models import MIGRATIONS, Outbox, open_store
from services.cases.worker import subscriptions
from shared import events as ev
from shared.bus.dispatch import Outcome, dispatch
from shared.events import Envelope, new_event, read_event
from shared.settings import Settings

ORG = "unicef-br"
OTHER_ORG = "unicef-mz"
PHONE = "+55 11 98765-4321"
CONTACT_NAME = "Júlia Souza"

_counter = itertools.count(1)


class DocumentedClient(FlaskClient):
    """The test client of every cases test: each answer of the partner API is checked against
    the OpenAPI document as it arrives (status documented for that operation, content type,
    body against the documented schema), so every test of the suite is also a test of the
    document. Requests that match no documented operation (unknown paths, wrong methods) are
    not checked here: they get the one error shape, tested apart."""

    answered: set[tuple[str, str, int]] = set()  # (method, documented path, status) checked

    def open(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("buffered", True)  # a file answer read whole, its file closed
        response = super().open(*args, **kwargs)
        request = response.request
        operation = _documented().find_operation_by_path(request.method, request.path)
        if operation is not None:
            operation.validate_response(response)
            self.answered.add((operation.method.lower(), operation.path, response.status_code))
        return response


@functools.cache
def _documented():
    import schemathesis

    return schemathesis.openapi.from_dict(document())


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Person:
    """A user and their token, as a test client sees them."""

    id: str
    token: str
    org: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# --- events other services send -----------------------------------------------------------------
def at(minutes: float = 0) -> datetime:
    """A fixed moment, plus some minutes: tests order messages with it."""
    return datetime(2026, 11, 21, 10, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def message_received(
    *,
    org: str = ORG,
    message_id: str | None = None,
    contact: str | None = None,
    text: str = "preciso de ajuda",
    received_at: datetime | None = None,
    simulation: bool = False,
    fields: dict[str, str | None] | None = None,
    external_id: str | None = None,
) -> Envelope:
    return new_event(
        ev.MESSAGE_RECEIVED,
        org=org,
        producer="ingest",
        data={
            "message_id": message_id or new_uuid(),
            "contact_uuid": contact or new_uuid(),
            "contact_groups": [{"uuid": new_uuid(), "name": "Bot"}],
            "contact_fields": fields if fields is not None else {"age": "15", "state": "SP"},
            "flow_uuid": new_uuid(),
            "flow_name": "Helpline",
            "node_uuid": new_uuid(),
            "external_id": external_id or new_uuid(),
            "text": text,
            "received_at": (received_at or at(next(_counter))).isoformat(),
            "channel": {"uuid": new_uuid(), "name": "WhatsApp"},
            "simulation": simulation,
        },
    )


def message_labeled(
    received: Envelope, labels: list[str], *, occurred_at: datetime | None = None
) -> Envelope:
    data = received.data
    event = new_event(
        ev.MESSAGE_LABELED,
        org=received.org,
        producer="labeler",
        data={
            "message_id": data["message_id"],
            "contact_uuid": data["contact_uuid"],
            "labels": labels,
            "external_id": data["external_id"],
            "simulation": data["simulation"],
        },
    )
    return dataclasses.replace(event, occurred_at=occurred_at) if occurred_at else event


def flowbridge_event(name: str, org: str = ORG, **data: Any) -> Envelope:
    return new_event(name, org=org, producer="flowbridge", data=data)


def outbox_events(store, name: str | None = None) -> list[Envelope]:
    with store.db.session() as session:
        rows = session.scalars(select(Outbox).order_by(Outbox.position)).all()
    found = [read_event(row.envelope) for row in rows]
    return [e for e in found if name is None or e.name == name]


# --- the world ----------------------------------------------------------------------------------
class CasesWorld:
    """A cases app on migrated tables with one bootstrapped org; close() disposes it."""

    def __init__(self, settings: Settings, store=None) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
        self.store.db.migrate(MIGRATIONS)
        self.app = create_app(settings, self.store)
        self.app.test_client_class = DocumentedClient
        self.client = self.app.test_client()
        self.subscriptions = {sub.queue.purpose: sub for sub in subscriptions(settings, self.store)}
        self._others: dict[str, Person] = {}
        self.admin = self.bootstrap(ORG)

    def close(self) -> None:
        self.store.db.dispose()

    def bootstrap(self, org: str) -> Person:
        user_id, token = handlers.bootstrap_org(
            self.store, org=org, name=f"UNICEF {org}", admin_email=f"admin@{org}.example"
        )
        return Person(user_id, token, org)

    # HTTP
    def call(self, person: Person | None, method: str, path: str, body: Any = None, **query):
        headers = person.headers if person else {}
        return self.client.open(
            path, method=method, json=body, query_string=query or None, headers=headers
        )

    def get(self, person: Person | None, path: str, **query):
        return self.call(person, "GET", path, **query)

    def post(self, person: Person | None, path: str, body: Any = None):
        return self.call(person, "POST", path, body if body is not None else {})

    def ok(self, response, status: int = 200) -> Any:
        assert response.status_code == status, (response.status_code, response.json)
        return response.json

    # people and labels, through the API as their org's administrator
    def admin_of(self, org: str) -> Person:
        return self.admin if org == ORG else self._others[org]

    def other_org(self, org: str = OTHER_ORG) -> Person:
        admin = self.bootstrap(org)
        self._others[org] = admin
        return admin

    def label(self, name: str | None = None, *, org: str = ORG, **values: Any) -> str:
        body = {"name": name or f"label {next(_counter)}", **values}
        if "rule" not in body:
            body["rule"] = [{"type": "keywords", "quantifier": "any", "keywords": ["ajuda"]}]
        return self.ok(self.post(self.admin_of(org), "/api/v1/labels", body), 201)["id"]

    def partner(
        self,
        name: str | None = None,
        *,
        org: str = ORG,
        restricted: bool = False,
        labels: tuple[str, ...] = (),
    ) -> str:
        body = {
            "name": name or f"partner {next(_counter)}",
            "restricted": restricted,
            "labels": list(labels),
        }
        return self.ok(self.post(self.admin_of(org), "/api/v1/partners", body), 201)["id"]

    def user(
        self, partner_id: str | None, *, role: str = "agent", org: str = ORG, name: str = ""
    ) -> Person:
        number = next(_counter)
        admin = self.admin_of(org)
        body = {
            "name": name or f"User {number}",
            "email": f"user{number}@partner.example",
            "role": role,
            "partner": partner_id,
        }
        user_id = self.ok(self.post(admin, "/api/v1/users", body), 201)["id"]
        token = self.ok(self.post(admin, f"/api/v1/users/{user_id}/tokens", {}), 201)["token"]
        return Person(user_id, token, org)

    # events
    def deliver(self, event: Envelope) -> Outcome:
        """Hand an event to the subscription whose queue it is routed to (shared/bus/
        topology.py), as either bus would."""
        [subscription] = [s for s in self.subscriptions.values() if event.name in s.queue.events]
        return dispatch(subscription, event.body())

    def export(self, person: Person, kind: str, file_format: str = "csv", **filters: Any) -> dict:
        """Ask for an export through the API and let the worker build it; the export as its
        requester then sees it."""
        asked = self.ok(
            self.post(
                person,
                "/api/v1/exports",
                {"kind": kind, "format": file_format, "filters": filters},
            ),
            202,
        )
        [requested] = [
            e for e in self.events(ev.EXPORT_REQUESTED) if e.data["export_id"] == asked["id"]
        ]
        assert self.deliver(requested) is Outcome.ACK
        return self.ok(self.get(person, f"/api/v1/exports/{asked['id']}"))

    def message(
        self, labels: list[str] | tuple[str, ...] = (), *, labelled: bool = True, **kwargs: Any
    ) -> str:
        """A message received (and, unless told otherwise, labelled); returns its id."""
        received = message_received(**kwargs)
        assert self.deliver(received) is Outcome.ACK
        if labelled:
            assert self.deliver(message_labeled(received, list(labels))) is Outcome.ACK
        return received.data["message_id"]

    def open_case(self, person: Person, message_id: str, partner_id: str, **extra: Any) -> dict:
        body = {"summary": "needs a human", "partner": partner_id, "message": message_id, **extra}
        return self.ok(self.post(person, "/api/v1/cases", body), 201)

    def events(self, name: str | None = None) -> list[Envelope]:
        return outbox_events(self.store, name)


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["items"]]
