"""Observability of the whole stack, every process separate, at DEBUG: webhooks carrying
distinctive URNs and phone numbers, with the secret in the header and in ``?token=``, flow to
the labeler and cases; afterwards every log line of every process is JSON, none holds a URN, a
phone number, the webhook secret or the cases API token, the webhook's correlation id shows up
in the labeler's and the cases worker's logs, and every worker and relay answers its probes
with the counters of what it did."""

from __future__ import annotations

import json

import pytest
import requests

from services.cases import handlers as cases_handlers
from services.cases.models import open_store as open_cases
from services.ingest import handlers as ingest_handlers
from services.ingest.models import open_store as open_ingest
from tests.ingest_helpers import ORG, fixture
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

SERVICES = ("ingest", "labeler", "cases")
WORKERS = ("labeler", "cases")
# URNs and phone numbers no log line may carry (digits that appear nowhere else).
URNS = [f"tel:+2507880{n}4{n}9{n}" for n in (1, 2, 3)]
PHONE_IN_TEXT = "+250 788 064 696"


def webhook(n: int, urn: str) -> bytes:
    body = json.loads(fixture("upartners_template.json"))
    body["contact"]["urn"] = urn
    body["contact"]["uuid"] = f"0f025fea-98bb-46bf-a0fe-00000000000{n}"
    body["input"]["uuid"] = f"c6cafbdf-65a1-4b6a-8942-51ccf68fc5{n:02d}"
    body["run"]["uuid"] = f"5cedbdd1-c8ce-471f-852e-fb9f7f0812{n:02d}"
    body["input"]["text"] = f"my number is {PHONE_IN_TEXT}, call me"
    return json.dumps(body).encode()


def sample(text: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when absent)."""
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(stack, name: str) -> str:
    answer = requests.get(f"{stack.ops_url_of(name)}/metrics", timeout=10)
    assert answer.status_code == 200
    return answer.text


def test_logs_are_json_carry_the_correlation_id_and_no_secrets(make_stack, pg_settings):
    stack = make_stack(SERVICES, WORKERS, extra_env={"UPARTNERS_LOG_LEVEL": "DEBUG"})
    ingest, cases = open_ingest(pg_settings), open_cases(pg_settings)
    try:
        _, secret = ingest_handlers.add_secret(ingest, ORG)
        _, api_token = cases_handlers.bootstrap_org(
            cases, org=ORG, name="Observed", admin_email="ops@example.org"
        )
    finally:
        ingest.db.dispose()
        cases.db.dispose()

    # the three ways a flow engine presents the secret
    url = f"{stack.url_of('ingest')}/webhooks/{ORG}/flow"
    credentials = [
        {"headers": {"Authorization": f"Token {secret}"}},
        {"params": {"token": secret}},
        {"headers": {"X-UPartners-Token": secret}},
    ]
    message_ids = []
    for n, (urn, presented) in enumerate(zip(URNS, credentials, strict=True), start=1):
        answer = requests.post(url, data=webhook(n, urn), timeout=10, **presented)
        assert answer.status_code == 200, answer.text
        message_ids.append(answer.json()["message"])
    assert requests.post(url, data=webhook(9, URNS[0]), timeout=10).status_code == 401

    # the cases API with its bearer token and a request id of the caller's
    me = requests.get(
        f"{stack.url_of('cases')}/api/v1/me",
        headers={"Authorization": f"Bearer {api_token}", "X-Request-ID": "ops-check-0001"},
        timeout=10,
    )
    assert me.status_code == 200 and me.headers["X-Request-ID"] == "ops-check-0001"

    count = len(message_ids)
    eventually(
        lambda: (
            sample(
                scrape(stack, "worker-labeler"),
                "upartners_events_acked_total",
                queue="labeler.messages",
            )
            >= count
        ),
        what="the labeler to handle every message",
    )
    # message.received and message.labeled of each message
    eventually(
        lambda: (
            sample(
                scrape(stack, "worker-cases"),
                "upartners_events_acked_total",
                queue="cases.messages",
            )
            >= 2 * count
        ),
        what="the cases worker to handle every message twice",
    )

    # probes and counters of every worker and relay
    for name in stack.processes:
        if name == "fake":
            continue
        base = stack.ops_url_of(name)
        assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}, name
        assert requests.get(f"{base}/readyz", timeout=10).json() == {"status": "ready"}, name
    labeler = scrape(stack, "worker-labeler")
    assert sample(labeler, "upartners_events_consumed_total", queue="labeler.messages") >= count
    assert sample(labeler, "upartners_events_dead_lettered_total", queue="labeler.messages") == 0
    relay_ingest = scrape(stack, "relay-ingest")
    assert sample(relay_ingest, "upartners_events_published_total", service="ingest") >= count
    assert "upartners_outbox_waiting{" in relay_ingest
    assert "upartners_outbox_oldest_age_seconds{" in relay_ingest
    relay_labeler = scrape(stack, "relay-labeler")
    assert sample(relay_labeler, "upartners_events_published_total", service="labeler") >= count
    assert requests.get(f"{stack.url_of('ingest')}/metrics", timeout=10).status_code == 404
    web = scrape(stack, "web-ingest")  # on its ops port only
    flow = {"service": "ingest", "endpoint": "/webhooks/<org>/flow", "method": "POST"}
    assert sample(web, "upartners_http_requests_total", **flow, status="200") == count
    assert sample(web, "upartners_http_requests_total", **flow, status="401") == 1

    # the logs, read after everything above was handled
    assert stack.log_dir is not None
    logs = {path.stem: path.read_text() for path in stack.log_dir.glob("*.log")}
    assert set(logs) >= {"web-ingest", "web-cases", "worker-labeler", "worker-cases"}
    forbidden = [secret, api_token, PHONE_IN_TEXT, "788 064 696", "250788064696"]
    forbidden += URNS + [urn.removeprefix("tel:+") for urn in URNS]
    for name, text in logs.items():
        for line in text.splitlines():
            entry = json.loads(line)  # every line is one JSON object
            assert entry["process"] == name, line
        for value in forbidden:
            assert value not in text, f"{name} logged something it must not"
    for name in ("worker-labeler", "worker-cases"):
        correlated = [
            json.loads(line)
            for line in logs[name].splitlines()
            if json.loads(line).get("correlation_id") in message_ids
        ]
        assert {e["correlation_id"] for e in correlated} == set(message_ids), name
        assert any(e["msg"].startswith("handled message.received") for e in correlated), name
    assert any(
        json.loads(line).get("correlation_id") == message_ids[0]
        for line in logs["web-ingest"].splitlines()
    )
    assert stack.dead() == []
