"""flowbridge's handlers through the real dispatcher, on SQLite, against the RapidPro contract fake
served over loopback: what ends up in the fake is what a real flow engine would have been told."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from services.flowbridge.flow_engine import (
    FlowEngineConfigError,
    FlowEngineUnavailable,
    RapidProClient,
)
from services.flowbridge.models import (
    CatalogEntry,
    ContactRecord,
    Effect,
    EngineConnection,
    Inbox,
    OrgSettings,
)
from services.flowbridge.steps import Options
from services.flowbridge.worker import subscriptions
from shared.bus.dispatch import Outcome, dispatch_batch
from shared.bus.topology import FLOWBRIDGE_CASES
from shared.uow import UnitOfWork
from tests.flowbridge_helpers import (
    ACTIVATE,
    ADULTS,
    ANN,
    BEN,
    BOT,
    CLOSED_ON,
    COUNSELLING,
    OPENED_ON,
    ORG,
    PARTNER,
    TOKEN,
    UREPORTERS,
    WS,
    case_closed,
    case_opened,
    label_created,
    message_labeled,
    messages_archived,
    org_updated,
    outgoing_requested,
    running_bridge,
)
from tests.support import counted


@pytest.fixture
def bridge(settings):
    with running_bridge(settings) as bridge:
        bridge.connect()
        assert bridge.deliver(org_updated()) is Outcome.ACK
        yield bridge


def data_of(bridge, name):
    return [event["data"] for event in bridge.emitted(name)]


def contact_record(bridge, contact=ANN):
    with bridge.store.db.session() as session:
        return session.get(ContactRecord, (ORG, contact))


# --- open and close -----------------------------------------------------------------------------
def test_open_takes_the_contact_out_of_bot_but_not_out_of_smart_or_other_groups(bridge):
    assert bridge.deliver(case_opened()) is Outcome.ACK

    assert ANN not in bridge.members(BOT)
    assert ANN in bridge.members(ADULTS) and ANN in bridge.members(UREPORTERS)
    removals = bridge.requests("contact_actions")
    assert [r["body"] for r in removals] == [
        {"contacts": [ANN], "action": "remove", "group": BOT}
    ]  # the smart group, known from the catalog, is not even tried
    [suspended] = data_of(bridge, "contact.suspended")
    assert suspended["groups"] == [BOT] and suspended["skipped"] == [ADULTS]
    assert suspended["reason"] is None and suspended["case_version"] == 1


def test_a_smart_group_the_catalog_does_not_know_is_refused_by_the_engine_and_skipped(bridge):
    with bridge.store.db.session() as session, session.begin():  # as if never synced
        session.execute(delete(CatalogEntry))

    assert bridge.deliver(case_opened()) is Outcome.ACK

    assert ANN not in bridge.members(BOT) and ANN in bridge.members(ADULTS)
    refused = bridge.requests("contact_actions")[-1]
    assert refused["status"] == 400 and refused["body"]["group"] == ADULTS
    [suspended] = data_of(bridge, "contact.suspended")
    assert suspended["groups"] == [BOT] and suspended["skipped"] == [ADULTS]
    assert contact_record(bridge).removed_groups == [BOT]  # nothing owed for the smart group


def test_close_puts_the_contact_back_and_starts_the_followup_with_the_case_params(bridge):
    bridge.deliver(case_opened())
    assert bridge.deliver(case_closed()) is Outcome.ACK

    assert ANN in bridge.members(BOT)
    [start] = bridge.state()["flow_starts"]
    assert start["flow"]["uuid"] == ACTIVATE
    assert [c["uuid"] for c in start["contacts"]] == [ANN]
    assert start["params"] == {
        "case": {
            "id": "case-1",
            "assignee": PARTNER,
            "opened_on": OPENED_ON.isoformat(),
            "closed_on": CLOSED_ON.isoformat(),
        }
    }
    [restored] = data_of(bridge, "contact.restored")
    assert restored["groups"] == [BOT] and restored["reason"] is None
    [followup] = data_of(bridge, "followup.started")
    assert followup == {
        "case_id": "case-1",
        "contact_uuid": ANN,
        "flow_uuid": ACTIVATE,
        "start_id": start["uuid"],
    }
    record = contact_record(bridge)
    assert record.open_case_id is None and record.removed_groups == [] and record.held_by is None


def test_a_contact_stopped_meanwhile_is_not_restored_but_its_next_case_starts_afresh(bridge):
    bridge.deliver(case_opened())
    bridge.set_contact(ANN, status="stopped")

    assert bridge.deliver(case_closed()) is Outcome.ACK

    assert ANN not in bridge.members(BOT)
    assert bridge.state()["flow_starts"] == []  # a stopped contact gets no follow-up either
    [restored] = data_of(bridge, "contact.restored")
    assert restored == {**restored, "groups": [], "reason": "contact_stopped"}
    record = contact_record(bridge)
    assert record.open_case_id is None and record.removed_groups == []

    # She writes in again (active) but has left the bot for good: her next case must not
    # put her back into Bot on the strength of the first case.
    bridge.set_contact(ANN, status="active")
    bridge.deliver(case_opened("case-2", 1))
    bridge.deliver(case_closed("case-2", 2))
    assert ANN not in bridge.members(BOT)
    assert [s["params"]["case"]["id"] for s in bridge.state()["flow_starts"]] == ["case-2"]


def test_reopen_then_close_does_not_start_the_followup_again(bridge):
    bridge.deliver(case_opened(version=1))
    bridge.deliver(case_closed(version=2))
    bridge.deliver(case_opened(version=3, reopened=True))
    assert ANN not in bridge.members(BOT)
    bridge.deliver(case_closed(version=4, first_close=False))

    assert ANN in bridge.members(BOT)
    assert len(bridge.state()["flow_starts"]) == 1
    assert len(data_of(bridge, "followup.started")) == 1
    assert len(data_of(bridge, "contact.restored")) == 2


def test_an_org_asking_for_every_close_gets_a_followup_each_time(bridge):
    bridge.deliver(org_updated(version=2, followup_every_close=True))
    bridge.deliver(case_opened(version=1))
    bridge.deliver(case_closed(version=2))
    bridge.deliver(case_opened(version=3, reopened=True))
    bridge.deliver(case_closed(version=4, first_close=False))

    assert len(bridge.state()["flow_starts"]) == 2


def test_interrupt_on_open_stops_the_contacts_flow_once(bridge):
    bridge.deliver(org_updated(version=2, interrupt_on_open=True))
    bridge.control.send(WS, ANN, text="hello", url=f"{bridge.url}/nowhere")  # she is in a flow
    assert bridge.state()["contacts"][0]["flow"] is not None

    event = case_opened()
    bridge.deliver(event)
    bridge.deliver(event)

    assert bridge.state()["contacts"][0]["flow"] is None
    interrupts = [
        r for r in bridge.requests("contact_actions") if r["body"]["action"] == "interrupt"
    ]
    assert len(interrupts) == 1


# --- out of order, redelivered, concurrent ------------------------------------------------------
def test_a_close_handled_before_its_open_converges_on_the_close(bridge):
    bridge.deliver(case_closed(version=2))
    bridge.deliver(case_opened(version=1))  # stale: a no-op

    assert ANN in bridge.members(BOT)
    assert not [r for r in bridge.requests("contact_actions") if r["body"]["action"] == "remove"]
    assert len(bridge.state()["flow_starts"]) == 1
    assert data_of(bridge, "contact.suspended") == []


def test_a_reopen_handled_before_the_close_it_follows_leaves_the_contact_suspended(bridge):
    bridge.deliver(case_opened(version=1))
    bridge.deliver(case_opened(version=3, reopened=True))
    bridge.deliver(case_closed(version=2))  # stale

    assert ANN not in bridge.members(BOT)
    assert bridge.state()["flow_starts"] == []
    assert contact_record(bridge).removed_groups == [BOT]


def test_a_close_of_an_older_case_does_not_release_the_contact_from_a_newer_one(bridge):
    bridge.deliver(case_opened("case-1", 1))
    bridge.deliver(case_opened("case-2", 1))  # case-1's close is still on its way
    bridge.deliver(case_closed("case-1", 2))

    assert ANN not in bridge.members(BOT)
    assert bridge.state()["flow_starts"] == []
    assert data_of(bridge, "contact.restored")[0]["reason"] == "another_case_open"

    bridge.deliver(case_closed("case-2", 2))
    assert ANN in bridge.members(BOT)


def test_each_event_delivered_twice_has_its_side_effects_once(bridge):
    events = [case_opened(), case_closed(), outgoing_requested()]
    for event in events:
        assert bridge.deliver(event) is Outcome.ACK
        assert bridge.deliver(event) is Outcome.ACK

    actions = [r["body"]["action"] for r in bridge.requests("contact_actions")]
    assert actions == ["remove", "add"]
    assert len(bridge.requests("flow_starts")) == 1
    assert len([r for r in bridge.requests("messages") if r["method"] == "POST"]) == 1
    for name in ("contact.suspended", "contact.restored", "followup.started", "outgoing.sent"):
        assert len(bridge.emitted(name)) == 1, name


def test_a_contact_held_by_another_event_is_retried_not_worked_on(bridge):
    with bridge.store.db.session() as session, session.begin():
        session.add(
            ContactRecord(
                org=ORG,
                contact_uuid=ANN,
                removed_groups=[],
                held_by="another-replica",
                held_until=bridge.clock() + timedelta(seconds=30),
            )
        )

    assert bridge.deliver(case_opened(), in_place_budget=0) is Outcome.RETRY
    assert ANN in bridge.members(BOT)

    bridge.clock.advance(31)  # that replica died: its lease runs out
    assert bridge.deliver(case_opened()) is Outcome.ACK
    assert ANN not in bridge.members(BOT)


def test_a_batch_is_handled_one_event_at_a_time(bridge):
    """The consumer may hand over several events in one transaction; flowbridge's must not share
    one: here Ben's engine outage would roll back Ann's case after her groups were changed."""
    outage = {BEN: 1}

    class Flaky(RapidProClient):
        def get_contact(self, uuid):
            if outage.get(uuid):
                outage[uuid] -= 1
                raise FlowEngineUnavailable("down for a moment")
            return super().get_contact(uuid)

    subs = subscriptions(
        bridge.settings,
        bridge.store,
        make_client=lambda url, token: Flaky(url, token, max_attempts=1),
        options=Options(clock=bridge.clock),
    )
    [cases] = [s for s in subs if s.queue is FLOWBRIDGE_CASES]
    batch = [case_opened().body(), case_opened("case-b", contact=BEN).body()]

    assert dispatch_batch(cases, batch, sleep=lambda _s: None) == [Outcome.ACK, Outcome.ACK]

    assert ANN not in bridge.members(BOT) and BEN not in bridge.members(BOT)
    assert sorted(e["contact_uuid"] for e in data_of(bridge, "contact.suspended")) == [ANN, BEN]


# --- crashes ------------------------------------------------------------------------------------
class Crash(BaseException):
    """The process dies: no handler code runs after it (no rollback path, no lease release)."""


@pytest.mark.parametrize(
    ("events", "sent"),
    [
        pytest.param([outgoing_requested()], lambda state: state["outgoing"], id="reply"),
        pytest.param(
            [case_opened(), case_closed()], lambda state: state["flow_starts"], id="followup"
        ),
    ],
)
def test_a_crash_after_the_call_was_recorded_does_not_repeat_it(bridge, monkeypatch, events, sent):
    *before, event = events
    for earlier in before:
        bridge.deliver(earlier)
    original_commit = UnitOfWork.commit

    def crash_before_commit(self):
        raise Crash

    monkeypatch.setattr(UnitOfWork, "commit", crash_before_commit)
    with pytest.raises(Crash):
        bridge.deliver(event)
    monkeypatch.setattr(UnitOfWork, "commit", original_commit)
    assert len(sent(bridge.state())) == 1
    assert not bridge.emitted("outgoing.sent") and not bridge.emitted("followup.started")

    bridge.clock.advance(61)  # the crashed attempt's hold on the contact runs out
    assert bridge.deliver(event) is Outcome.ACK  # redelivered: its inbox row was never written
    assert len(sent(bridge.state())) == 1
    names = [e["name"] for e in bridge.emitted()]
    assert names.count("outgoing.sent") + names.count("followup.started") == 1


def test_a_crash_during_the_call_repeats_it_after_the_lease__the_known_window(bridge):
    """The one gap left: the engine accepted the message, the process died before recording it.
    The redelivery waits for the lease, then sends again (at least once, never lost)."""
    event = outgoing_requested()
    original_send = RapidProClient.send_message

    def send_then_crash(self, *args):
        original_send(self, *args)
        raise Crash

    RapidProClient.send_message = send_then_crash
    try:
        with pytest.raises(Crash):
            bridge.deliver(event)
    finally:
        RapidProClient.send_message = original_send

    assert bridge.deliver(event, in_place_budget=0) is Outcome.RETRY  # still held: may be running
    assert len(bridge.state()["outgoing"]) == 1
    bridge.clock.advance(61)
    assert bridge.deliver(event) is Outcome.ACK
    assert len(bridge.state()["outgoing"]) == 2
    assert len(bridge.emitted("outgoing.sent")) == 1


def test_a_crash_after_removing_groups_still_gives_them_back_on_close(bridge):
    original_remove = RapidProClient.remove_from_group

    def remove_then_crash(self, *args):
        original_remove(self, *args)
        raise Crash

    event = case_opened()
    RapidProClient.remove_from_group = remove_then_crash
    try:
        with pytest.raises(Crash):
            bridge.deliver(event)
    finally:
        RapidProClient.remove_from_group = original_remove
    assert ANN not in bridge.members(BOT)

    bridge.clock.advance(61)
    assert bridge.deliver(event) is Outcome.ACK  # Ann is no longer in Bot when asked again
    assert data_of(bridge, "contact.suspended")[0]["groups"] == [BOT]
    bridge.deliver(case_closed())
    assert ANN in bridge.members(BOT)


# --- replies ------------------------------------------------------------------------------------
def test_a_reply_is_sent_through_the_engine_and_reported(bridge):
    assert bridge.deliver(outgoing_requested(text="Olá Ann, estamos aqui.")) is Outcome.ACK

    [message] = bridge.state()["outgoing"]
    assert message["text"] == "Olá Ann, estamos aqui." and message["contact"]["uuid"] == ANN
    [sent] = data_of(bridge, "outgoing.sent")
    assert sent["outgoing_id"] == "out-1"
    assert (sent["external_id"], sent["external_uuid"]) == (message["id"], message["uuid"])


def test_a_few_503s_are_retried_and_the_reply_is_sent_once(bridge):
    bridge.control.inject_fault(WS, status=503, count=3, path="messages")

    assert bridge.deliver(outgoing_requested()) is Outcome.ACK

    assert len(bridge.state()["outgoing"]) == 1
    assert [r["status"] for r in bridge.requests("messages")] == [503, 503, 503, 201]
    assert len(data_of(bridge, "outgoing.sent")) == 1
    assert data_of(bridge, "outgoing.failed") == []


def test_an_engine_down_past_the_budget_fails_the_reply_instead_of_retrying_forever(bridge):
    bridge.control.inject_fault(WS, status=503, path="messages")  # until cleared
    event = outgoing_requested()

    assert bridge.deliver(event, in_place_budget=0) is Outcome.RETRY
    bridge.clock.advance(61)
    assert bridge.deliver(event, in_place_budget=0) is Outcome.ACK

    assert data_of(bridge, "outgoing.failed") == [{"outgoing_id": "out-1", "reason": "unavailable"}]
    assert bridge.state()["outgoing"] == []


def test_a_refused_token_fails_the_reply_once_with_configuration(bridge, caplog):
    bridge.control.inject_fault(WS, status=403, path="messages", body={"detail": "Invalid token"})
    event = outgoing_requested()

    with caplog.at_level(logging.DEBUG):
        assert bridge.deliver(event) is Outcome.ACK
        assert bridge.deliver(event) is Outcome.ACK

    assert len(bridge.requests("messages")) == 1  # no retry of a bad token
    assert data_of(bridge, "outgoing.failed") == [
        {"outgoing_id": "out-1", "reason": "configuration"}
    ]
    with bridge.store.db.session() as session:
        effect = session.scalar(select(Effect))
    assert (effect.status, effect.error) == ("failed", "configuration")
    assert TOKEN not in caplog.text


def test_an_org_without_a_connection_records_its_side_effects_as_skipped(bridge):
    other = "nowhere"
    assert bridge.deliver(org_updated(org=other)) is Outcome.ACK
    assert bridge.deliver(outgoing_requested(org=other)) is Outcome.ACK
    assert bridge.deliver(case_opened(org=other)) is Outcome.ACK
    assert bridge.deliver(case_closed(org=other)) is Outcome.ACK

    assert data_of(bridge, "outgoing.failed") == [
        {"outgoing_id": "out-1", "reason": "not_connected"}
    ]
    assert data_of(bridge, "contact.suspended")[0]["reason"] == "not_connected"
    assert data_of(bridge, "contact.restored")[0]["reason"] == "not_connected"
    with bridge.store.db.session() as session:
        effects = session.scalars(select(Effect).where(Effect.org == other)).all()
    assert sorted((e.kind, e.status, e.error) for e in effects) == [
        ("followup", "skipped", "not_connected"),
        ("send", "skipped", "not_connected"),
    ]
    assert bridge.requests("messages") == []


# --- mirroring ----------------------------------------------------------------------------------
def add_messages(bridge, count):
    return [
        bridge.control.add(WS, "messages", {"contact": ANN, "text": f"message {n}"})["uuid"]
        for n in range(count)
    ]


def test_synced_labels_are_mirrored_onto_the_engines_message(bridge):
    bridge.deliver(org_updated(version=2, mirror_labels=True))
    bridge.deliver(label_created())
    bridge.deliver(label_created("f10b0000-0000-4000-8000-0000000000d2", "Private", synced=False))
    [external_id] = add_messages(bridge, 1)

    event = message_labeled(
        external_id, [COUNSELLING, "f10b0000-0000-4000-8000-0000000000d2"], [COUNSELLING]
    )
    assert bridge.deliver(event) is Outcome.ACK

    [message] = [m for m in bridge.state()["messages"] if m["uuid"] == external_id]
    assert [label["name"] for label in message["labels"]] == ["Counselling"]
    [action] = bridge.requests("message_actions")
    assert action["body"] == {
        "messages": [message["id"]],
        "action": "label",
        "label": "Counselling",
    }


def test_labels_are_not_mirrored_for_orgs_that_do_not_ask(bridge):
    bridge.deliver(label_created())
    [external_id] = add_messages(bridge, 1)
    bridge.deliver(message_labeled(external_id, [COUNSELLING], [COUNSELLING]))
    assert bridge.requests("message_actions") == []


def test_archiving_is_mirrored_in_batches_of_100_and_ids_are_looked_up_once(bridge):
    bridge.deliver(org_updated(version=2, mirror_archive=True))
    external_ids = add_messages(bridge, 130)

    assert bridge.deliver(messages_archived(external_ids)) is Outcome.ACK
    assert bridge.deliver(messages_archived(external_ids, restored=True)) is Outcome.ACK

    actions = bridge.requests("message_actions")
    assert [(a["body"]["action"], len(a["body"]["messages"])) for a in actions] == [
        ("archive", 100),
        ("archive", 30),
        ("restore", 100),
        ("restore", 30),
    ]
    lookups = [r for r in bridge.requests("messages") if r["method"] == "GET"]
    assert len(lookups) == 130  # the restore reused the ids found for the archive
    assert {m["visibility"] for m in bridge.state()["messages"]} == {"visible"}


def test_opening_a_case_mirrors_the_archiving_of_the_contacts_messages(bridge):
    bridge.deliver(org_updated(version=2, mirror_archive=True))
    external_ids = add_messages(bridge, 2)

    bridge.deliver(case_opened(archived=external_ids))

    assert {m["visibility"] for m in bridge.state()["messages"]} == {"archived"}


# --- org settings and the catalog ---------------------------------------------------------------
def test_connect_stores_the_connection_and_publishes_the_catalog(bridge):
    [synced, *_] = data_of(bridge, "catalog.synced")
    assert {(g["name"], g["smart"]) for g in synced["groups"]} == {
        ("Bot", False),
        ("U-Reporters", False),
        ("Adults", True),
    }
    assert {f["uuid"] for f in synced["flows"]} == {
        ACTIVATE,
        "f10b0000-0000-4000-8000-0000000000f2",
    }
    with bridge.store.db.session() as session:
        connection = session.get(EngineConnection, ORG)
    assert connection.base_url == bridge.url and TOKEN not in repr(connection)
    assert all(TOKEN not in str(event) for event in bridge.emitted())


def test_a_refused_token_is_not_stored(bridge):
    with pytest.raises(FlowEngineConfigError):
        bridge.connect(org="other", token="wrong-token")
    with bridge.store.db.session() as session:
        assert session.get(EngineConnection, "other") is None


def test_org_updated_keeps_the_newest_settings_and_syncs_the_catalog(bridge):
    assert len(bridge.emitted("catalog.synced")) == 2  # connect, then org.updated v1
    bridge.deliver(org_updated(version=3, suspend_groups=[UREPORTERS]))
    bridge.deliver(org_updated(version=2, suspend_groups=[BOT]))  # late: stale

    with bridge.store.db.session() as session:
        settings = session.get(OrgSettings, ORG)
    assert (settings.org_version, settings.suspend_groups) == (3, [UREPORTERS])
    assert len(bridge.emitted("catalog.synced")) == 3

    bridge.deliver(case_opened(contact=BEN))
    assert BEN in bridge.members(BOT)  # Bot is no longer a suspend group


def test_message_events_with_nothing_to_mirror_are_acknowledged_without_a_transaction(bridge):
    """Most message.labeled carry no synced label: flowbridge acknowledges them without a commit
    (it was one commit per message, a fifth of a core at 100 webhooks/s)."""
    bridge.deliver(org_updated(version=2, mirror_labels=True, mirror_archive=True))
    bridge.deliver(label_created())
    [external_id] = add_messages(bridge, 1)
    nothing = [
        message_labeled(external_id, [COUNSELLING], []),
        message_labeled("", [COUNSELLING], [COUNSELLING]),
        messages_archived([]),
        messages_archived([], restored=True),
    ]
    with counted(bridge.store.db.engine) as sent:
        assert [bridge.deliver(e) for e in nothing] == [Outcome.ACK] * len(nothing)
    assert sent == []
    assert bridge.requests("message_actions") == []
    with bridge.store.db.session() as session:
        done = set(session.scalars(select(Inbox.event_id)))
    assert not done & {e.id for e in nothing}
