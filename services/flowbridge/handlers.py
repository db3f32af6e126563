"""The flowbridge service layer: one function per event, calling the flow engine through the port.

Every handler takes the unit of work the dispatcher opened, the event, and ``engine_for(org)``,
which gives the org's flow engine (the RapidPro adapter, or ``NullFlowEngine`` when the org has
no connection). Handlers that call the engine work in :class:`Steps` (``steps.py``): they save
their progress before and after each call, so that a redelivered event skips what was already
done, and they change their final state and emit their events only after the last call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from services.flowbridge import domain
from services.flowbridge.flow_engine import (
    FlowEngine,
    FlowEngineConfigError,
    FlowEngineRejected,
    NullFlowEngine,
)
from services.flowbridge.models import (
    ContactRecord,
    EngineConnection,
    Label,
    MessageRef,
    OrgSettings,
)
from services.flowbridge.state import (
    case_version,
    org_policy,
    record_case,
    record_catalog,
    smart_groups,
)
from services.flowbridge.steps import DEFAULT_OPTIONS, DONE, Options, Steps
from shared import events as ev
from shared.db import insert_statement, utcnow
from shared.events import Envelope
from shared.orgs import ORG_KEY_RULE, is_org_key
from shared.uow import ServiceStore, UnitOfWork

log = logging.getLogger(__name__)

EngineFor = Callable[[str], FlowEngine]
MakeClient = Callable[[str, str], FlowEngine]


def is_connected(engine: FlowEngine) -> bool:
    return not isinstance(engine, NullFlowEngine)


# --- case.opened / case.reopened ----------------------------------------------------------------
def suspend_contact(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    """Take the contact out of the org's suspend groups while the case is open, so the bot is
    silent; remember which groups, interrupt its flow, mirror the archiving of its messages."""
    org, data = event.org, event.data
    contact_uuid, case_id = data["contact_uuid"], data["case_id"]
    with Steps(uow, event, options) as steps:
        record = steps.hold_contact(org, contact_uuid)
        known = case_version(uow.session, org, case_id)
        if not domain.is_newer(known, data["case_version"]):
            log.info(
                "%s of case %s v%s is stale (v%s applied)",
                event.name,
                case_id,
                data["case_version"],
                known,
            )
            return
        policy = org_policy(uow.session, org)
        engine = engine_for(org)
        record.open_case_id = case_id
        skipped: list[str] = []
        reason: str | None = None
        contact = None
        if not is_connected(engine):
            reason = domain.NOT_CONNECTED
        elif policy.suspend_groups or policy.interrupt_on_open:
            try:
                contact = steps.call(engine.get_contact, contact_uuid)
            except FlowEngineConfigError:
                reason = domain.CONFIGURATION
            else:
                if contact is None:
                    reason = domain.CONTACT_NOT_FOUND
        if contact is not None:
            plan = domain.plan_suspension(
                policy.suspend_groups,
                [group.uuid for group in contact.groups],
                smart_groups(uow.session, org),
            )
            for group in plan.skipped:
                log.warning(
                    "group %s of org %s is a smart group: the contact stays in it", group, org
                )
            skipped.extend(plan.skipped)
            # Recorded before the calls: after a crash, the groups are still given back.
            record.removed_groups = domain.merged(record.removed_groups, plan.remove)
            reason = _remove_from_groups(steps, engine, record, plan.remove, skipped)
            if policy.interrupt_on_open and reason is None:
                steps.run_effect(
                    org,
                    domain.effect_key("interrupt", case_id, data["case_version"]),
                    "interrupt",
                    lambda: engine.interrupt([contact_uuid]) or {},
                )
        if policy.mirror_archive and data["archived_external_ids"] and is_connected(engine):
            _change_visibility(steps, engine, org, data["archived_external_ids"], archive=True)

        record.last_error = reason if reason == domain.CONFIGURATION else None
        record_case(uow.session, org, data, is_open=True)
        uow.emit(
            ev.CONTACT_SUSPENDED,
            org=org,
            data={
                "case_id": case_id,
                "case_version": data["case_version"],
                "contact_uuid": contact_uuid,
                "groups": list(record.removed_groups),
                "skipped": skipped,
                "reason": reason,
            },
        )


def _remove_from_groups(
    steps: Steps,
    engine: FlowEngine,
    record: ContactRecord,
    groups: Sequence[str],
    skipped: list[str],
) -> str | None:
    refused: list[str] = []
    reason = None
    for group in groups:
        try:
            steps.call(engine.remove_from_group, [record.contact_uuid], group)
        except FlowEngineRejected as exc:
            # e.g. a smart group the catalog did not know about, or a deleted group
            log.warning(
                "could not remove contact %s from group %s: %s", record.contact_uuid, group, exc
            )
            refused.append(group)
        except FlowEngineConfigError:
            reason = domain.CONFIGURATION
            break
    skipped.extend(refused)
    record.removed_groups = [g for g in record.removed_groups if g not in refused]
    return reason


# --- case.closed --------------------------------------------------------------------------------
def restore_contact(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    """Give the contact back exactly the groups its case took, unless it is now blocked or
    stopped, and start the org's follow-up flow (on the case's first close, unless the org asks
    for every close)."""
    org, data = event.org, event.data
    contact_uuid, case_id, version = data["contact_uuid"], data["case_id"], data["case_version"]
    with Steps(uow, event, options) as steps:
        record = steps.hold_contact(org, contact_uuid)
        known = case_version(uow.session, org, case_id)
        if not domain.is_newer(known, version):
            log.info("case.closed of case %s v%s is stale (v%s applied)", case_id, version, known)
            return
        policy = org_policy(uow.session, org)
        engine = engine_for(org)
        held_elsewhere = record.open_case_id not in (None, case_id)
        followup = domain.wants_followup(policy, data["first_close"]) and not held_elsewhere

        problem: str | None = None
        status: str | None = None
        if not is_connected(engine):
            problem = domain.NOT_CONNECTED
        elif followup or (record.removed_groups and not held_elsewhere):
            try:
                contact = steps.call(engine.get_contact, contact_uuid)
            except FlowEngineConfigError:
                problem = domain.CONFIGURATION
            else:
                status = contact.status if contact is not None else None

        plan = domain.plan_restoration(
            case_id, record.open_case_id, record.removed_groups, status, problem
        )
        restored, owed, reason = _add_to_groups(steps, engine, contact_uuid, plan)

        effect = None
        if followup:
            key = domain.effect_key("followup", case_id, version)
            if problem is not None or status != "active":
                why = problem or (
                    domain.contact_inactive(status) if status else domain.CONTACT_NOT_FOUND
                )
                effect = steps.skip_effect(org, key, "followup", why)
            else:
                params = domain.followup_params(
                    case_id, data["assignee_partner"], data["opened_on"], data["closed_on"]
                )
                flow = policy.followup_flow
                effect = steps.run_effect(
                    org,
                    key,
                    "followup",
                    lambda: {"start": engine.start_flow(flow, [contact_uuid], params)},
                )

        if plan.releases:
            record.open_case_id = None
        record.removed_groups = list(owed)
        record.last_error = reason if reason == domain.CONFIGURATION else None
        record_case(uow.session, org, data, is_open=False)
        uow.emit(
            ev.CONTACT_RESTORED,
            org=org,
            data={
                "case_id": case_id,
                "case_version": version,
                "contact_uuid": contact_uuid,
                "groups": list(restored),
                "reason": reason,
            },
        )
        if effect is not None and effect.status == DONE:
            uow.emit(
                ev.FOLLOWUP_STARTED,
                org=org,
                data={
                    "case_id": case_id,
                    "contact_uuid": contact_uuid,
                    "flow_uuid": policy.followup_flow,
                    "start_id": str(effect.result["start"]),
                },
            )


def _add_to_groups(
    steps: Steps, engine: FlowEngine, contact_uuid: str, plan: domain.Restoration
) -> tuple[list[str], list[str], str | None]:
    """Add the contact back; returns (restored, still owed, reason)."""
    restored: list[str] = []
    owed = list(plan.still_owed)
    for position, group in enumerate(plan.groups):
        try:
            steps.call(engine.add_to_group, [contact_uuid], group)
        except FlowEngineRejected as exc:
            log.warning("could not add contact %s back to group %s: %s", contact_uuid, group, exc)
        except FlowEngineConfigError:
            return restored, [*owed, *plan.groups[position:]], domain.CONFIGURATION
        else:
            restored.append(group)
    return restored, owed, plan.reason


# --- outgoing.requested -------------------------------------------------------------------------
def send_reply(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    """Send a partner's reply through the flow engine (which picks the contact's channel)."""
    org, data = event.org, event.data
    outgoing_id = data["outgoing_id"]
    with Steps(uow, event, options) as steps:
        engine = engine_for(org)
        key = domain.effect_key("send", outgoing_id)
        if not is_connected(engine):
            effect = steps.skip_effect(org, key, "send", domain.NOT_CONNECTED)
        else:

            def send() -> dict[str, Any]:
                sent = engine.send_message(data["contact_uuid"], data["text"])
                return {"id": sent.id, "uuid": sent.uuid}

            effect = steps.run_effect(org, key, "send", send, budget=options.send_budget)
        if effect.status == DONE:
            uow.emit(
                ev.OUTGOING_SENT,
                org=org,
                data={
                    "outgoing_id": outgoing_id,
                    "external_id": effect.result["id"],
                    "external_uuid": effect.result["uuid"],
                    "sent_on": effect.finished_at.isoformat(),
                },
            )
        else:
            uow.emit(
                ev.OUTGOING_FAILED,
                org=org,
                data={"outgoing_id": outgoing_id, "reason": effect.error or domain.REJECTED},
            )


# --- message.labeled, message.archived, message.restored ----------------------------------------
def mirror_labels(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    """Label the message in the flow engine with its synced labels, for orgs that ask for it.

    Labels are only added: message.labeled carries no version to order a removal by.
    """
    org, data = event.org, event.data
    if domain.no_labels_to_mirror(data) or not org_policy(uow.session, org).mirror_labels:
        return
    labels = uow.session.scalars(
        select(Label).where(
            Label.org == org,
            Label.label_uuid.in_(data["synced"]),
            Label.synced.is_(True),
            Label.active.is_(True),
            Label.deleted.is_(False),
        )
    ).all()
    unknown = set(data["synced"]) - {label.label_uuid for label in labels}
    if unknown:
        log.warning("not mirroring labels unknown here or no longer synced: %s", sorted(unknown))
    if not labels:
        return
    with Steps(uow, event, options) as steps:
        engine = engine_for(org)
        if not is_connected(engine):
            return
        ids = _engine_ids(steps, engine, org, [data["external_id"]])
        if not ids:
            return
        for label in labels:
            # The engine's label field takes a uuid or a name; ours are U-Partners' uuids.
            _message_action(steps, engine.label_messages, ids, label.name)


def mirror_archive(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    _mirror_visibility(uow, event, engine_for, options, archive=True)


def mirror_restore(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    _mirror_visibility(uow, event, engine_for, options, archive=False)


def _mirror_visibility(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options, *, archive: bool
) -> None:
    org, external_ids = event.org, event.data["external_ids"]
    if domain.no_messages_to_mirror(event.data) or not org_policy(uow.session, org).mirror_archive:
        return
    with Steps(uow, event, options) as steps:
        engine = engine_for(org)
        if is_connected(engine):
            _change_visibility(steps, engine, org, external_ids, archive=archive)


def _change_visibility(
    steps: Steps, engine: FlowEngine, org: str, external_ids: Sequence[str], *, archive: bool
) -> None:
    ids = _engine_ids(steps, engine, org, external_ids)
    if ids:
        action = engine.archive_messages if archive else engine.restore_messages
        _message_action(steps, action, ids)


def _message_action(
    steps: Steps, action: Callable[..., list[int]], ids: list[int], *args: Any
) -> None:
    """Message actions are idempotent: no ledger, a repeat does no harm."""
    try:
        failures = steps.call(action, ids, *args)
    except (FlowEngineRejected, FlowEngineConfigError) as exc:
        log.warning("message action refused by the flow engine: %s", exc)
        return
    if failures:
        log.info("the flow engine no longer has messages %s", failures)


def _engine_ids(
    steps: Steps, engine: FlowEngine, org: str, external_ids: Iterable[str]
) -> list[int]:
    """The engine's integer ids of messages by uuid, looked up once and then remembered."""
    wanted = list(dict.fromkeys(x for x in external_ids if x))
    session = steps.session
    known: dict[str, int] = dict(
        session.execute(
            select(MessageRef.external_id, MessageRef.engine_id).where(
                MessageRef.org == org, MessageRef.external_id.in_(wanted)
            )
        ).all()
    )
    missing = [x for x in wanted if x not in known]
    if missing:
        try:
            found = steps.call(engine.message_ids, missing)
        except (FlowEngineRejected, FlowEngineConfigError) as exc:
            log.warning("could not look message ids up in the flow engine: %s", exc)
            found = {}
        for external_id, engine_id in found.items():
            session.execute(
                insert_statement(session, MessageRef)
                .values(org=org, external_id=external_id, engine_id=engine_id)
                .on_conflict_do_nothing(index_elements=["org", "external_id"])
            )
        known.update(found)
        if len(found) < len(missing):
            log.info("%d message(s) not found in the flow engine", len(missing) - len(found))
    return [known[x] for x in wanted if x in known]


# --- org.updated, label.created / updated / deleted ---------------------------------------------
def update_org(
    uow: UnitOfWork, event: Envelope, engine_for: EngineFor, options: Options = DEFAULT_OPTIONS
) -> None:
    """Keep the org's newest settings, then sync the catalog (its groups and flows)."""
    org, data = event.org, event.data
    with Steps(uow, event, options) as steps:
        row = uow.session.get(OrgSettings, org)
        if row is not None and row.org_version > data["org_version"]:
            log.info(
                "org.updated v%s of %s is stale (v%s applied)",
                data["org_version"],
                org,
                row.org_version,
            )
            return
        if row is None or row.org_version < data["org_version"]:
            row = row or OrgSettings(org=org)
            row.org_version = data["org_version"]
            row.suspend_groups = list(data["suspend_groups"])
            row.followup_flow = data["followup_flow"]
            row.followup_every_close = data["followup_every_close"]
            row.interrupt_on_open = data["interrupt_on_open"]
            row.mirror_labels = data["mirror_labels"]
            row.mirror_archive = data["mirror_archive"]
            uow.session.add(row)
            # The settings hold even if the catalog cannot be read now (a retry reads it again).
            steps.save()
        engine = engine_for(org)
        if not is_connected(engine):
            return
        try:
            groups, flows = steps.call(engine.list_groups), steps.call(engine.list_flows)
        except (FlowEngineConfigError, FlowEngineRejected) as exc:
            log.warning("could not read the catalog of %s: %s", org, exc)
            return
        record_catalog(uow, org, groups, flows, options.clock())


def record_label(uow: UnitOfWork, event: Envelope) -> None:
    """label.created / label.updated: the newest definition wins."""
    org, data = event.org, event.data
    row = uow.session.get(Label, (org, data["label_uuid"]))
    if row is not None and row.label_version >= data["label_version"]:
        return
    row = row or Label(org=org, label_uuid=data["label_uuid"])
    row.name, row.synced, row.active = data["name"], data["synced"], data["active"]
    row.deleted, row.label_version = False, data["label_version"]
    uow.session.add(row)


def forget_label(uow: UnitOfWork, event: Envelope) -> None:
    """label.deleted: keep a tombstone with the version, so a late label.updated stays dead."""
    org, data = event.org, event.data
    row = uow.session.get(Label, (org, data["label_uuid"]))
    if row is not None and row.label_version >= data["label_version"]:
        return
    row = row or Label(org=org, label_uuid=data["label_uuid"], name="")
    row.deleted, row.synced, row.label_version = True, False, data["label_version"]
    uow.session.add(row)


# --- connecting an org (CLI) ----------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogSummary:
    org: str
    base_url: str
    token_fingerprint: str
    groups: int
    flows: int


def connect_org(
    store: ServiceStore, org: str, base_url: str, token: str, make_client: MakeClient
) -> CatalogSummary:
    """Store the org's flow engine connection once the engine accepted the token, and sync the
    catalog. Raises ValueError for a bad org key, FlowEngineError when the engine says no."""
    if not is_org_key(org):
        raise ValueError(ORG_KEY_RULE)
    engine = make_client(base_url, token)
    try:
        groups, flows = engine.list_groups(), engine.list_flows()
    finally:
        _close(engine)
    base_url = getattr(engine, "base_url", base_url)
    fingerprint = domain.token_fingerprint(token)
    with store.unit_of_work() as uow:
        row = uow.session.get(EngineConnection, org) or EngineConnection(org=org)
        row.base_url, row.api_token, row.token_fingerprint = base_url, token, fingerprint
        uow.session.add(row)
        record_catalog(uow, org, groups, flows, utcnow())
        uow.commit()
    return CatalogSummary(org, base_url, fingerprint, len(groups), len(flows))


def sync_org(store: ServiceStore, org: str, make_client: MakeClient) -> CatalogSummary:
    """Read the org's groups and flows again and emit catalog.synced. Raises LookupError when
    the org has no connection, FlowEngineError when the engine says no."""
    with store.unit_of_work() as uow:
        row = uow.session.get(EngineConnection, org)
        if row is None:
            raise LookupError(f"org {org!r} has no flow engine connection")
        base_url, token, fingerprint = row.base_url, row.api_token, row.token_fingerprint
    engine = make_client(base_url, token)
    try:
        groups, flows = engine.list_groups(), engine.list_flows()
    finally:
        _close(engine)
    with store.unit_of_work() as uow:
        record_catalog(uow, org, groups, flows, utcnow())
        uow.commit()
    return CatalogSummary(org, base_url, fingerprint, len(groups), len(flows))


def _close(engine: FlowEngine) -> None:
    close = getattr(engine, "close", None)
    if close is not None:
        close()
