"""The RapidPro API v2 adapter of flowbridge, against the contract fake over loopback HTTP."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, jsonify, request

from fakes.rapidpro import create_app
from services.flowbridge.flow_engine import (
    Contact,
    FlowEngine,
    FlowEngineConfigError,
    FlowEngineRejected,
    FlowEngineUnavailable,
    GroupRef,
    NullFlowEngine,
    RapidProClient,
    SentMessage,
)
from tests.fakes_server import FakeControl, serve_app

WS = "acme"
TOKEN = "acme-secret-token-9f8e7d"
SUSPEND = "00000000-0000-4000-8000-0000000000a1"
SMART = "00000000-0000-4000-8000-0000000000a2"
FOLLOW_UP = "00000000-0000-4000-8000-0000000000f1"
LABEL = "00000000-0000-4000-8000-0000000000b1"
ANN = "00000000-0000-4000-8000-000000000c01"
BOB = "00000000-0000-4000-8000-000000000c02"


@dataclass
class FakeClock:
    """Shared by the fake's rate limiter and the client's ``sleep``: sleeping moves time on."""

    now: float = 1000.0
    waits: list[float] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@dataclass
class Fake:
    url: str
    control: FakeControl
    clock: FakeClock

    def client(self, token: str = TOKEN, **kwargs: object) -> RapidProClient:
        kwargs.setdefault("sleep", self.clock.sleep)
        return RapidProClient(self.url, token, **kwargs)  # type: ignore[arg-type]

    def api_requests(self, endpoint: str) -> list[dict]:
        return self.control.requests(endpoint=endpoint)


@pytest.fixture
def fake() -> Iterator[Fake]:
    clock = FakeClock()
    with serve_app(create_app(page_size=2, clock=clock.time)) as url:
        control = FakeControl(url)
        control.create_workspace(
            {
                "name": WS,
                "token": TOKEN,
                "groups": [
                    {"uuid": SUSPEND, "name": "Bot"},
                    {"uuid": SMART, "name": "Adults", "query": "age >= 18"},
                    {"name": "Partners"},
                ],
                "flows": [{"uuid": FOLLOW_UP, "name": "Activate chat"}, {"name": "Poll"}],
                "labels": [{"uuid": LABEL, "name": "Counselling"}],
                "contacts": [
                    {
                        "uuid": ANN,
                        "name": "Ann",
                        "urns": ["tel:+256700000001"],
                        "groups": [SUSPEND, SMART],
                        "language": "eng",
                    },
                    {
                        "uuid": BOB,
                        "name": "Bob",
                        "urns": ["tel:+256700000002"],
                        "status": "blocked",
                    },
                ],
            }
        )
        yield Fake(url, control, clock)


@pytest.fixture
def client(fake: Fake) -> Iterator[RapidProClient]:
    with fake.client() as engine:
        yield engine


def test_client_satisfies_the_port(client: RapidProClient) -> None:
    engine: FlowEngine = client
    null: FlowEngine = NullFlowEngine()
    assert engine is not null


def test_reads_a_contact_with_its_groups(client: RapidProClient) -> None:
    assert client.get_contact(ANN) == Contact(
        uuid=ANN,
        name="Ann",
        status="active",
        groups=(GroupRef(SUSPEND, "Bot"), GroupRef(SMART, "Adults")),
        language="eng",
    )
    assert client.get_contact(BOB).status == "blocked"
    assert not client.get_contact(BOB).is_active
    assert client.get_contact("00000000-0000-4000-8000-00000000dead") is None


def test_lists_follow_next_cursors_across_pages(fake: Fake, client: RapidProClient) -> None:
    for index in range(3):
        fake.control.add(WS, "groups", {"name": f"Extra {index}"})

    groups = client.list_groups()

    assert len(groups) == 6  # page size is 2: three pages
    assert len(fake.api_requests("groups")) == 3
    assert {g.name: g.is_smart for g in groups}["Adults"] is True
    assert {g.name: g.is_smart for g in groups}["Bot"] is False
    assert [f.name for f in client.list_flows()] == ["Poll", "Activate chat"]
    assert [(label.uuid, label.name) for label in client.list_labels()] == [(LABEL, "Counselling")]


def test_next_cursor_is_followed_on_the_configured_host_only() -> None:
    """A ``next`` pointing elsewhere must not receive the token."""
    app = Flask(__name__)
    seen: list[tuple[str, str | None]] = []

    @app.get("/api/v2/groups.json")
    def groups():  # type: ignore[no-untyped-def]
        seen.append((request.full_path, request.headers.get("Authorization")))
        if request.args.get("cursor"):
            return jsonify(next=None, previous=None, results=[{"uuid": "g2", "name": "B"}])
        return jsonify(
            next="http://elsewhere.invalid/api/v2/groups.json?cursor=abc",
            previous=None,
            results=[{"uuid": "g1", "name": "A", "query": None}],
        )

    with serve_app(app) as url, RapidProClient(url, TOKEN, sleep=lambda s: None) as engine:
        assert [g.uuid for g in engine.list_groups()] == ["g1", "g2"]
    assert seen == [
        ("/api/v2/groups.json?", f"Token {TOKEN}"),
        ("/api/v2/groups.json?cursor=abc", f"Token {TOKEN}"),
    ]


def test_bulk_group_changes_are_split_into_chunks_of_100(
    fake: Fake, client: RapidProClient
) -> None:
    many = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 251)]
    fake.control.call(
        "POST",
        "/workspaces",
        {
            "name": "big",
            "token": "big-token",
            "groups": [{"uuid": SUSPEND, "name": "Bot"}],
            "contacts": [
                {"uuid": u, "urns": [f"tel:+1555{n:07d}"], "groups": [SUSPEND]}
                for n, u in enumerate(many)
            ],
        },
    )

    with fake.client("big-token") as big:
        big.remove_from_group(many, SUSPEND)
        posts = fake.control.requests(workspace="big", endpoint="contact_actions")
        assert [len(p["body"]["contacts"]) for p in posts] == [100, 100, 50]
        assert {p["body"]["action"] for p in posts} == {"remove"}
        assert fake.control.state("big")["groups"][0]["members"] == []

        big.add_to_group(many, SUSPEND)
        assert len(fake.control.state("big")["groups"][0]["members"]) == 250
        assert len(fake.control.requests(workspace="big", endpoint="contact_actions")) == 6


def test_suspend_and_restore_group_membership(fake: Fake, client: RapidProClient) -> None:
    client.remove_from_group([ANN], SUSPEND)
    assert GroupRef(SUSPEND, "Bot") not in client.get_contact(ANN).groups

    client.add_to_group([ANN], SUSPEND)
    assert GroupRef(SUSPEND, "Bot") in client.get_contact(ANN).groups

    client.remove_from_group([], SUSPEND)  # nothing to do: no request
    assert len(fake.api_requests("contact_actions")) == 2


def test_interrupt_takes_the_contact_out_of_its_flow(fake: Fake, client: RapidProClient) -> None:
    client.start_flow(FOLLOW_UP, [ANN], {})
    assert fake.control.state(WS)["contacts"][0]["flow"]["uuid"] == FOLLOW_UP

    client.interrupt([ANN])

    assert fake.control.state(WS)["contacts"][0]["flow"] is None
    assert fake.api_requests("contact_actions")[-1]["body"] == {
        "contacts": [ANN],
        "action": "interrupt",
    }


def test_smart_group_is_refused(client: RapidProClient) -> None:
    with pytest.raises(FlowEngineRejected) as caught:
        client.remove_from_group([ANN], SMART)
    assert caught.value.errors == {"group": ["Contact group must not be query based: Adults"]}


def test_400_raises_rejected_with_the_field_errors(client: RapidProClient) -> None:
    with pytest.raises(FlowEngineRejected) as caught:
        client.send_message("not-a-contact", "hello")
    assert caught.value.errors == {"contact": ["No such object: not-a-contact"]}
    assert "No such object" in str(caught.value)

    with pytest.raises(FlowEngineRejected) as caught:  # blocked contacts cannot be added back
        client.add_to_group([BOB], SUSPEND)
    assert caught.value.errors == {
        "non_field_errors": [f"Non-active contacts cannot be added to groups: {BOB}"]
    }


def test_send_message_returns_the_queued_message(fake: Fake, client: RapidProClient) -> None:
    sent = client.send_message(ANN, "We are here for you.")

    assert isinstance(sent, SentMessage)
    assert isinstance(sent.id, int)
    [outgoing] = fake.control.state(WS)["outgoing"]
    assert (outgoing["id"], outgoing["uuid"]) == (sent.id, sent.uuid)
    assert (outgoing["text"], outgoing["status"]) == ("We are here for you.", "queued")
    assert outgoing["contact"]["uuid"] == ANN


def test_start_flow_sends_params_and_restarts(fake: Fake, client: RapidProClient) -> None:
    params = {"case": {"id": 7, "assignee": {"id": 3, "name": "Partner A"}, "opened_on": "x"}}

    start = client.start_flow(FOLLOW_UP, [ANN], params)

    [recorded] = fake.control.state(WS)["flow_starts"]
    assert start == recorded["uuid"]
    assert recorded["params"] == params
    assert recorded["restart_participants"] is True
    assert [c["uuid"] for c in recorded["contacts"]] == [ANN]


def test_message_ids_label_archive_restore(fake: Fake, client: RapidProClient) -> None:
    first = fake.control.add(WS, "messages", {"contact": ANN, "text": "help"})
    second = fake.control.add(WS, "messages", {"contact": ANN, "text": "please"})
    unknown_uuid = "00000000-0000-4000-8000-00000000beef"

    ids = client.message_ids([first["uuid"], second["uuid"], unknown_uuid])
    assert ids == {first["uuid"]: first["id"], second["uuid"]: second["id"]}

    assert client.label_messages(list(ids.values()), LABEL) == []
    assert client.archive_messages(list(ids.values())) == []
    messages = fake.control.state(WS)["messages"]
    assert [m["labels"] for m in messages] == [[{"uuid": LABEL, "name": "Counselling"}]] * 2
    assert [m["archived"] for m in messages] == [True, True]

    assert client.restore_messages([first["id"]]) == []
    assert client.unlabel_messages([first["id"]], LABEL) == []
    messages = fake.control.state(WS)["messages"]
    assert [m["archived"] for m in messages] == [False, True]
    assert [len(m["labels"]) for m in messages] == [0, 1]

    assert client.archive_messages([second["id"], 999_999]) == [999_999]


def test_429_waits_retry_after_then_succeeds(fake: Fake, client: RapidProClient) -> None:
    fake.control.settings(WS, rate_limit={"requests": 2, "window": 30})

    client.list_flows()
    client.list_labels()
    client.get_contact(ANN)  # third request in the window: 429, wait, retry

    assert fake.clock.waits == [30.0]
    assert [r["status"] for r in fake.control.requests(workspace=WS)] == [200, 200, 429, 200]


def test_retry_after_is_capped_by_max_wait(fake: Fake) -> None:
    fake.control.settings(WS, rate_limit={"requests": 1, "window": 600})
    with fake.client(max_wait=5.0, max_attempts=3) as engine:
        engine.list_flows()
        with pytest.raises(FlowEngineUnavailable, match="rate limited"):
            engine.list_flows()
    assert fake.clock.waits == [5.0, 5.0]


def test_injected_429_retry_after_is_honoured(fake: Fake, client: RapidProClient) -> None:
    fake.control.inject_fault(WS, status=429, retry_after=7, count=1, path="messages")

    client.send_message(ANN, "hi")

    assert fake.clock.waits == [7.0]
    assert len(fake.control.state(WS)["outgoing"]) == 1


def test_5xx_is_retried_with_backoff_then_succeeds(fake: Fake, client: RapidProClient) -> None:
    fake.control.inject_fault(WS, status=503, count=2, path="messages")

    sent = client.send_message(ANN, "hi")

    assert fake.clock.waits == [0.5, 1.0]
    assert [r["status"] for r in fake.api_requests("messages")] == [503, 503, 201]
    assert [m["id"] for m in fake.control.state(WS)["outgoing"]] == [sent.id]


def test_5xx_beyond_the_budget_raises_unavailable(fake: Fake) -> None:
    fake.control.inject_fault(WS, status=502, count=None)
    with fake.client(max_attempts=3) as engine, pytest.raises(FlowEngineUnavailable) as caught:
        engine.remove_from_group([ANN], SUSPEND)
    assert "502" in str(caught.value)
    assert len(fake.api_requests("contact_actions")) == 3
    assert fake.clock.waits == [0.5, 1.0]
    assert SUSPEND in [g["uuid"] for g in fake.control.state(WS)["contacts"][0]["groups"]]


def test_network_errors_are_retried_then_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[float] = []
    with (
        RapidProClient(f"http://127.0.0.1:{port}", TOKEN, sleep=waits.append) as engine,
        pytest.raises(FlowEngineUnavailable, match="network error"),
    ):
        engine.list_groups()
    assert waits == [0.5, 1.0, 2.0, 4.0]


def test_bad_token_raises_config_error_without_retry(fake: Fake) -> None:
    with fake.client("wrong-token") as engine, pytest.raises(FlowEngineConfigError) as caught:
        engine.list_groups()
    assert "403" in str(caught.value)
    assert fake.clock.waits == []
    assert [(r["workspace"], r["status"]) for r in fake.api_requests("groups")] == [(None, 403)]


def test_the_token_never_leaks(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.control.inject_fault(WS, status=500, count=None, path="groups")
    texts: list[str] = []
    with fake.client(max_attempts=2) as engine:
        texts.append(repr(engine))
        for call in (
            engine.list_groups,  # 5xx, retried and logged
            lambda: engine.send_message("nobody", "x"),  # 400
        ):
            with pytest.raises((FlowEngineUnavailable, FlowEngineRejected)) as caught:
                call()
            texts += [str(caught.value), repr(caught.value)]
    with fake.client("bad-" + TOKEN) as engine, pytest.raises(FlowEngineConfigError) as caught:
        engine.list_flows()
    texts += [repr(engine), str(caught.value)]

    assert any("retry" in record.getMessage() for record in caplog.records)
    texts += [record.getMessage() for record in caplog.records]
    assert texts and all(TOKEN not in text for text in texts)
    assert repr(RapidProClient("https://rapidpro.example/", TOKEN)) == (
        "RapidProClient(base_url='https://rapidpro.example')"
    )


def test_base_url_is_validated_and_normalised() -> None:
    with pytest.raises(FlowEngineConfigError):
        RapidProClient("rapidpro.example", TOKEN)
    with pytest.raises(FlowEngineConfigError):
        RapidProClient("https://rapidpro.example", "")
    engine = RapidProClient("https://rapidpro.example/api/v2/", TOKEN)
    assert engine.base_url == "https://rapidpro.example"
    engine.close()


def test_null_engine_does_nothing() -> None:
    engine = NullFlowEngine()
    assert engine.get_contact(ANN) is None
    assert engine.list_groups() == engine.list_flows() == engine.list_labels() == []
    assert engine.remove_from_group([ANN], SUSPEND) is None
    assert engine.add_to_group([ANN], SUSPEND) is None
    assert engine.interrupt([ANN]) is None
    assert engine.message_ids(["x"]) == {}
    assert engine.label_messages([1], LABEL) == engine.archive_messages([1]) == []
    assert engine.unlabel_messages([1], LABEL) == engine.restore_messages([1]) == []
    with pytest.raises(FlowEngineConfigError):
        engine.send_message(ANN, "hi")
    with pytest.raises(FlowEngineConfigError):
        engine.start_flow(FOLLOW_UP, [ANN], {})
