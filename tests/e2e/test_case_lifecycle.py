"""The whole pipeline, every process separate, on RabbitMQ and PostgreSQL, against the contract
fake of the RapidPro API: webhook -> labelled inbox message -> case -> bot suspended -> the
contact's next message lands in the case -> reply delivered -> close -> bot restored and the
follow-up flow started with the case's params. Then the same with the engine failing for 30 s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from fakes.rapidpro.seed import (
    DEMO_CONTACT_AMINA,
    DEMO_FLOW_ACTIVATE,
    DEMO_FLOW_POLL,
    DEMO_GROUP_BOT,
    DEMO_POLL_WAIT_NODE,
    DEMO_TOKEN,
    DEMO_WORKSPACE,
)
from services import registry
from services.cases import handlers as cases_handlers
from services.cases.models import open_store as open_cases
from services.flowbridge import handlers as flowbridge_handlers
from services.flowbridge.models import open_store as open_flowbridge
from services.flowbridge.worker import rapidpro_client
from services.ingest import handlers as ingest_handlers
from services.ingest.models import open_store as open_ingest
from tests.fakes_server import FakeControl
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

ORG = "demo"


class Partner:
    """The partner UI, as far as this test needs it: the cases API with a token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = f"{base_url}/api/v1"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)):
        response = self.http.request(method, self.base + path, json=body, timeout=10)
        assert response.status_code in expect, (method, path, response.text)
        return response.json() if response.content else None

    def inbox(self) -> list[dict]:
        return self.call("GET", "/messages?folder=inbox")["items"]


@pytest.fixture
def world(make_stack, pg_settings):
    """All processes plus the fake; the demo org configured as an administrator would."""
    stack = make_stack(registry.NAMES, registry.WORKERS, with_fake=True)
    fake = FakeControl(stack.url_of("fake"))
    stores = [open_ingest(pg_settings), open_cases(pg_settings), open_flowbridge(pg_settings)]
    ingest, cases, flowbridge = stores
    try:
        _, secret = ingest_handlers.add_secret(ingest, ORG)
        _, admin_token = cases_handlers.bootstrap_org(
            cases,
            org=ORG,
            name="Demo helpline",
            admin_email="admin@example.org",
            admin_name="Ada",
        )
        flowbridge_handlers.connect_org(
            flowbridge, ORG, stack.url_of("fake"), DEMO_TOKEN, rapidpro_client
        )
        partner = Partner(stack.url_of("cases"), admin_token)
        partner.call(
            "PATCH",
            "/org",
            {"suspend_groups": [DEMO_GROUP_BOT], "followup_flow": DEMO_FLOW_ACTIVATE},
        )
        counsellors = partner.call("POST", "/partners", {"name": "Counsellors"}, expect=(201,))
        partner.call(
            "POST",
            "/labels",
            {
                "name": "Poll answers",
                "rule": [
                    {
                        "type": "step",
                        "steps": [{"flow": DEMO_FLOW_POLL, "node": DEMO_POLL_WAIT_NODE}],
                    }
                ],
            },
            expect=(201,),
        )
        time.sleep(1.5)  # the label and the settings reach the labeler and flowbridge

        def contact_writes(text: str) -> dict:
            sent = fake.send(
                DEMO_WORKSPACE,
                DEMO_CONTACT_AMINA,
                text=text,
                shape="upartners",
                url=f"{stack.url_of('ingest')}/webhooks/{ORG}/flow",
                headers={"Authorization": f"Token {secret}"},
                flow=DEMO_FLOW_POLL,
                node=DEMO_POLL_WAIT_NODE,
            )
            assert sent["status"] == 200, sent
            return sent

        yield stack, fake, partner, counsellors, contact_writes
    finally:
        for store in stores:
            store.db.dispose()


def in_bot(fake: FakeControl) -> bool:
    state = fake.state(DEMO_WORKSPACE)
    [bot] = [g for g in state["groups"] if g["uuid"] == DEMO_GROUP_BOT]
    return DEMO_CONTACT_AMINA in bot["members"]


def live_one_case(fake, partner, counsellors, contact_writes, during_case=lambda: None):
    assert in_bot(fake)
    contact_writes("I need to talk to someone about my situation")
    [message] = eventually(partner.inbox, what="the message in the inbox")
    assert message["labels"][0]["name"] == "Poll answers"

    case = partner.call(
        "POST",
        "/cases",
        {"message": message["id"], "summary": "Needs support", "partner": counsellors["id"]},
        expect=(201,),
    )
    during_case()
    eventually(lambda: not in_bot(fake), timeout=90, what="the contact to leave Bot")

    contact_writes("thank you, are you still there?")
    timeline = f"/cases/{case['id']}/timeline"
    eventually(
        lambda: sum(e["type"] == "incoming" for e in partner.call("GET", timeline)["items"]) == 2,
        what="the second message in the case",
    )
    assert partner.inbox() == []  # it went into the case, archived

    partner.call(
        "POST",
        f"/cases/{case['id']}/reply",
        {"text": "Yes, we are here for you."},
        expect=(200, 201),
    )
    eventually(
        lambda: any(
            m["text"] == "Yes, we are here for you." for m in fake.state(DEMO_WORKSPACE)["outgoing"]
        ),
        timeout=90,
        what="the reply at the engine",
    )

    partner.call("POST", f"/cases/{case['id']}/close", {"note": "Referred to a counsellor"})
    eventually(lambda: in_bot(fake), timeout=90, what="the contact back in Bot")
    starts = eventually(
        lambda: fake.state(DEMO_WORKSPACE)["flow_starts"], timeout=90, what="the follow-up flow"
    )
    return case, starts


def assert_once_each(fake, case, starts):
    state = fake.state(DEMO_WORKSPACE)
    assert [m["text"] for m in state["outgoing"]] == ["Yes, we are here for you."]
    [start] = starts
    assert start["flow"]["uuid"] == DEMO_FLOW_ACTIVATE
    params = start["params"]["case"]
    assert params["id"] == case["id"]
    assert params["assignee"]["name"] == "Counsellors"
    assert params["opened_on"] and params["closed_on"]
    time.sleep(1.0)  # late duplicates would show now
    assert fake.state(DEMO_WORKSPACE)["flow_starts"] == starts


def test_the_whole_case_lifecycle(world):
    stack, fake, partner, counsellors, contact_writes = world
    case, starts = live_one_case(fake, partner, counsellors, contact_writes)
    assert_once_each(fake, case, starts)
    assert stack.dead() == []


def test_an_engine_outage_of_30_seconds_in_the_middle_loses_nothing(world):
    stack, fake, partner, counsellors, contact_writes = world
    outage_ends = []

    def engine_down_for_30_seconds():
        fake.inject_fault(DEMO_WORKSPACE, status=503)  # every API endpoint, until cleared
        outage_ends.append(time.monotonic() + 30)

    case, starts = live_one_case(
        fake,
        partner,
        counsellors,
        contact_writes,
        during_case=lambda: _outage(fake, engine_down_for_30_seconds),
    )
    assert time.monotonic() >= outage_ends[0]
    refused = [r for r in fake.requests(workspace=DEMO_WORKSPACE) if r["status"] == 503]
    assert refused, "the outage did not hit flowbridge's calls"
    assert_once_each(fake, case, starts)
    assert stack.dead() == []


def _outage(fake, start):
    """Start the outage and clear it 30 s later from a timer, while the pipeline waits."""
    import threading

    start()
    timer = threading.Timer(30, lambda: fake.clear_faults(DEMO_WORKSPACE))
    timer.daemon = True
    timer.start()
