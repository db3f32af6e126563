"""The product under fault: ingest -> labeler -> cases, every process separate, and the checks
that prove nothing accepted was lost and nothing was done twice."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection
from sqlalchemy import func, select

from services.cases import handlers as cases_handlers
from services.cases.models import Message as CasesMessage
from services.cases.models import MessageLabel
from services.cases.models import open_store as open_cases
from services.ingest import handlers as ingest_handlers
from services.ingest.models import Message as IngestMessage
from services.ingest.models import open_store as open_ingest
from services.labeler.models import Label as LabelerLabel
from services.labeler.models import Message as LabelerMessage
from services.labeler.models import open_store as open_labeler
from services.stack import PORTS, Stack
from shared import events as ev
from shared.bus import topology
from shared.settings import Settings
from shared.uow import ServiceStore
from tests.fault.servers import free_base_port
from tests.ingest_helpers import fixture
from tests.labeler_helpers import step

ORG = "fault-org"
SERVICES = ("ingest", "labeler", "cases")
WORKERS = ("labeler", "cases")
# Queues the stack consumes (flowbridge's have no consumer here and keep what they get).
CONSUMED = tuple(spec for spec in topology.QUEUES if spec.service in WORKERS)


@dataclass
class World:
    settings: Settings
    stack: Stack
    ingest: ServiceStore
    labeler: ServiceStore
    cases: ServiceStore
    secret: str
    label_id: str

    @property
    def webhook_url(self) -> str:
        return f"{self.stack.url_of('ingest')}/webhooks/{ORG}/flow"

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Token {self.secret}",
            "Content-Type": "application/json",
            "User-Agent": "Mailroom/9.3.0",
        }

    def close(self) -> None:
        self.stack.stop()
        for store in (self.ingest, self.labeler, self.cases):
            store.db.dispose()


def webhook_body(template: dict, i: int) -> bytes:
    """A distinct webhook: its own engine message, run and contact (so its own idempotency key)."""
    body = json.loads(json.dumps(template))
    body["input"]["uuid"] = str(uuid.uuid4())
    body["run"]["uuid"] = str(uuid.uuid4())
    body["contact"]["uuid"] = str(uuid.uuid4())
    body["input"]["text"] = f"{body['input']['text']} #{i}"
    return json.dumps(body).encode()


def body_factory():
    template = json.loads(fixture("upartners_template.json"))
    return lambda i: webhook_body(template, i)


def open_world(settings: Settings, log_dir: Path) -> World:
    """Start the stack, create the org's webhook secret, and a label (defined in cases, as the
    partner API does) that every test webhook matches: its flow step. Returns once the labeler
    knows the label, so every message sent afterwards must come out labelled."""
    stack = Stack(settings, SERVICES, WORKERS, base_port=free_base_port(PORTS), log_dir=log_dir)
    stack.start()
    ingest, labeler, cases = open_ingest(settings), open_labeler(settings), open_cases(settings)
    world = World(settings, stack, ingest, labeler, cases, secret="", label_id="")
    try:
        _, world.secret = ingest_handlers.add_secret(ingest, ORG)
        _, token = cases_handlers.bootstrap_org(
            cases, org=ORG, name="Fault tests", admin_email="admin@example.org"
        )
        actor = cases_handlers.authenticate(cases, token)
        assert actor is not None
        label = cases_handlers.create_label(cases, actor, {"name": "Everything", "rule": [step()]})
        world.label_id = label.id
        deadline = time.monotonic() + 60
        while not _labeler_knows(labeler, label.id):
            assert time.monotonic() < deadline, "the label never reached the labeler"
            time.sleep(0.1)
        return world
    except BaseException:
        world.close()
        raise


def _labeler_knows(labeler: ServiceStore, label_id: str) -> bool:
    with labeler.db.session() as session:
        return session.get(LabelerLabel, label_id) is not None


def sleep_until(moment: float) -> None:
    """Sleep until a monotonic time (the fault schedule follows the sender's clock)."""
    if (delay := moment - time.monotonic()) > 0:
        time.sleep(delay)


# --- checks -------------------------------------------------------------------------------------
def not_yet_labelled(world: World, ids: set[str]) -> set[str]:
    """The ids not yet stored with the label by the labeler and by cases."""
    with world.labeler.db.session() as session:
        labelled = {
            row.id
            for row in session.execute(select(LabelerMessage.id, LabelerMessage.labels))
            if world.label_id in row.labels
        }
    with world.cases.db.session() as session:
        in_cases = set(
            session.scalars(
                select(CasesMessage.id)
                .join(MessageLabel, MessageLabel.message_id == CasesMessage.id)
                .where(
                    MessageLabel.label_id == world.label_id,
                    CasesMessage.labelled.is_(True),
                    CasesMessage.received_at.is_not(None),
                )
            )
        )
    return ids - (labelled & in_cases)


def wait_until_labelled(
    world: World, ids: set[str], *, since: float, within: float, rabbit=None
) -> float:
    """Poll until every id is labelled; return the seconds from ``since`` (a monotonic time)
    until then. Fails with the count still missing once ``since + within`` has passed."""
    deadline = since + within
    missing = ids
    while True:
        missing = not_yet_labelled(world, ids)
        if not missing:
            return time.monotonic() - since
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(ids)} messages not labelled {within:.0f}s after "
                f"the fault ended; where they stopped: {where(world, missing)}"
                + (f"; queues: {queue_states(world, rabbit)}" if rabbit is not None else "")
            )
        time.sleep(0.5)


def where(world: World, ids: set[str]) -> dict[str, str]:
    """For a failure message: how far each of (at most ten) messages got through the pipeline."""
    found = {}
    for message_id in sorted(ids)[:10]:
        with world.ingest.db.session() as session:
            ingested = session.get(IngestMessage, message_id) is not None
            outbox = world.ingest.outbox
            published = session.scalar(
                select(func.count())
                .select_from(outbox)
                .where(
                    outbox.envelope["data"]["message_id"].as_string() == message_id,
                    outbox.published_at.is_not(None),
                )
            )
        with world.labeler.db.session() as session:
            labelled = session.get(LabelerMessage, message_id)
            outbox = world.labeler.outbox
            labeled_published = session.scalar(
                select(func.count())
                .select_from(outbox)
                .where(
                    outbox.envelope["data"]["message_id"].as_string() == message_id,
                    outbox.published_at.is_not(None),
                )
            )
        with world.cases.db.session() as session:
            in_cases = session.get(CasesMessage, message_id)
        found[message_id] = (
            f"ingest stored={ingested} published={published}; "
            f"labeler labels={labelled.labels if labelled else None} "
            f"published={labeled_published}; cases received="
            f"{bool(in_cases and in_cases.received_at)} labelled="
            f"{bool(in_cases and in_cases.labelled)}"
        )
    return found


def queue_states(world: World, rabbit) -> dict[str, tuple[int, int]]:
    """(ready, unacknowledged) of every queue and DLQ of the namespace, for failure messages."""
    names = []
    for spec in topology.QUEUES:
        name = spec.name(world.settings.namespace)
        names += [name, topology.dlq_name(name)]
    return rabbit.messages(names)


def queue_depths(settings: Settings) -> dict[str, int]:
    """Ready messages of every queue and DLQ of the namespace (passive declares)."""
    depths = {}
    with Connection(settings.broker_url, connect_timeout=5) as connection:
        channel = connection.channel()
        for spec in topology.QUEUES:
            name = spec.name(settings.namespace)
            for queue in (name, topology.dlq_name(name)):
                depths[queue] = channel.queue_declare(queue, passive=True).message_count
    return depths


def wait_until_settled(world: World, rabbit, timeout: float = 60.0) -> None:
    """Every outbox published and every consumed queue empty, unacknowledged ones included:
    nothing is in flight any more, so a duplicate effect would be in the tables by now.
    (Cheap checks first; rabbitmqctl, which starts an Erlang VM, only once they pass.)"""
    consumed = [spec.name(world.settings.namespace) for spec in CONSUMED]
    deadline = time.monotonic() + timeout
    unpublished, pending, depths = -1, {}, {}
    while time.monotonic() < deadline:
        unpublished = sum(unpublished_events(store) for store in stores(world))
        depths = queue_depths(world.settings)
        if unpublished == 0 and not any(depths[name] for name in consumed):
            found = rabbit.messages(consumed)
            pending = {q: found.get(q, (-1, -1)) for q in consumed if found.get(q) != (0, 0)}
            if not pending:
                return
        time.sleep(0.5)
    raise AssertionError(
        f"not settled: {unpublished} unpublished; (ready, unacknowledged): {pending or depths}"
    )


def stores(world: World) -> tuple[ServiceStore, ...]:
    return (world.ingest, world.labeler, world.cases)


def unpublished_events(store: ServiceStore) -> int:
    outbox = store.outbox
    with store.db.session() as session:
        return session.scalar(
            select(func.count()).select_from(outbox).where(outbox.published_at.is_(None))
        )


def labelled_count(world: World) -> int:
    with world.labeler.db.session() as session:
        return session.scalar(select(func.count()).select_from(LabelerMessage))


def ingest_message_ids(world: World) -> set[str]:
    with world.ingest.db.session() as session:
        return set(session.scalars(select(IngestMessage.id)))


@dataclass(frozen=True)
class Effects:
    ingest_messages: int
    labeler_messages: int
    cases_messages: int
    labeled_events: Counter  # message id -> message.labeled rows in the labeler's outbox
    received_events: Counter  # message id -> message.received rows in ingest's outbox


def effects(world: World) -> Effects:
    def count(store: ServiceStore, model) -> int:
        with store.db.session() as session:
            return session.scalar(select(func.count()).select_from(model))

    def emitted(store: ServiceStore, name: str) -> Counter:
        outbox = store.outbox
        with store.db.session() as session:
            envelopes = session.scalars(select(outbox.envelope).where(outbox.name == name))
            return Counter(envelope["data"]["message_id"] for envelope in envelopes)

    return Effects(
        ingest_messages=count(world.ingest, IngestMessage),
        labeler_messages=count(world.labeler, LabelerMessage),
        cases_messages=count(world.cases, CasesMessage),
        labeled_events=emitted(world.labeler, ev.MESSAGE_LABELED),
        received_events=emitted(world.ingest, ev.MESSAGE_RECEIVED),
    )


def assert_exactly_once(world: World, accepted: set[str]) -> Effects:
    """Each accepted message stored once by every service, labelled once, nothing dead."""
    found = effects(world)
    assert found.ingest_messages == len(accepted), found.ingest_messages
    assert found.labeler_messages == len(accepted), found.labeler_messages
    assert found.cases_messages == len(accepted), found.cases_messages
    assert set(found.received_events) == accepted
    assert set(found.labeled_events) == accepted
    twice = {m: n for m, n in found.labeled_events.items() if n != 1}
    assert not twice, f"message.labeled emitted more than once: {list(twice.items())[:3]}"
    assert all(n == 1 for n in found.received_events.values())
    dead = {q: n for q, n in queue_depths(world.settings).items() if q.endswith(".dlq") and n}
    assert not dead, f"dead-lettered: {dead}"
    return found
