"""The labeler's service layer: keep the label projection current, label each message, relabel."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, select, tuple_, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from services.labeler.models import Label, Message, OrgLabels
from shared import rules
from shared.bus.dispatch import PermanentError
from shared.db import dialect_insert, dialect_name, insert_statement, utcnow
from shared.events import MESSAGE_LABELED, Envelope
from shared.uow import ServiceStore, UnitOfWork

log = logging.getLogger(__name__)


# --- the compiled labels of each org ------------------------------------------------------------
class IndexCache:
    """Each org's compiled ``LabelIndex``, rebuilt only when the org's label revision moved.

    The revision is read from the database once per transaction (a worker's batch of up to
    ``prefetch`` messages), so a label changed through another replica takes effect here at
    the next batch, as fresh as reading it for every message of that one transaction.
    """

    def __init__(self) -> None:
        self._by_org: dict[str, tuple[int, rules.LabelIndex]] = {}
        self._lock = threading.Lock()

    def index_for(self, session: Session, org: str) -> rules.LabelIndex:
        revision = _revision(session, org)
        with self._lock:
            cached = self._by_org.get(org)
        if cached is not None and cached[0] == revision:
            return cached[1]
        rows = session.scalars(
            select(Label).where(Label.org == org, Label.deleted.is_(False), Label.active.is_(True))
        ).all()
        index = rules.LabelIndex(label for row in rows if (label := _rule_label(row)) is not None)
        with self._lock:
            self._by_org[org] = (revision, index)
        return index


_REVISIONS = "labeler.revisions"


def _revision(session: Session, org: str) -> int:
    """The org's label revision, read once per transaction (``session.info``, dropped when the
    transaction ends: a batch that failed and is handled again one by one reads it again)."""
    known = session.info.get(_REVISIONS)
    if known is None:
        known = session.info[_REVISIONS] = {}
        if not sa_event.contains(session, "after_transaction_end", _forget_revisions):
            sa_event.listen(session, "after_transaction_end", _forget_revisions)
    if org not in known:
        known[org] = session.scalar(_revision_of(), {"org": org}) or 0
    return known[org]


@functools.cache
def _revision_of() -> Select:
    """Built once: read at every batch, a statement built anew costs its cache key each time."""
    return select(OrgLabels.revision).where(OrgLabels.org == bindparam("org"))


def _forget_revisions(session: Session, transaction: Any) -> None:
    """At the end of the transaction or of a savepoint, not of a flush's inner transaction."""
    if transaction.parent is None or transaction.nested:
        session.info.pop(_REVISIONS, None)


def _rule_label(row: Label) -> rules.Label | None:
    try:
        tests = rules.parse_rule(row.rule)
    except rules.RuleError as exc:  # checked on the way in; only a hand-edited row gets here
        log.error("label %s has an invalid rule and is ignored: %s", row.uuid, exc)
        return None
    return rules.Label(row.uuid, row.name, row.synced, row.active, tests)


def _bump_revision(session: Session, org: str) -> None:
    session.info.get(_REVISIONS, {}).pop(org, None)
    inserted = session.scalar(
        insert_statement(session, OrgLabels)
        .values(org=org, revision=1)
        .on_conflict_do_nothing(index_elements=["org"])
        .returning(OrgLabels.org)
    )
    if inserted is None:
        session.execute(
            update(OrgLabels).where(OrgLabels.org == org).values(revision=OrgLabels.revision + 1)
        )


# --- label definitions (label.created / label.updated / label.deleted) --------------------------
def apply_label_change(uow: UnitOfWork, event: Envelope) -> None:
    """Create or update the label, unless a newer version of it is already known."""
    data = event.data
    try:
        rules.parse_rule(data["rule"])
    except rules.RuleError as exc:
        raise PermanentError(f"label {data['label_uuid']} has an invalid rule: {exc}") from exc
    label = uow.session.get(Label, data["label_uuid"])
    if label is not None and label.version >= data["label_version"]:
        return  # a stale or repeated change, delivered out of order
    if label is None:
        label = Label(uuid=data["label_uuid"], org=event.org)
        uow.session.add(label)
    label.name = data["name"]
    label.synced = data["synced"]
    label.active = data["active"]
    label.rule = data["rule"]
    label.deleted = False
    label.version = data["label_version"]
    _bump_revision(uow.session, event.org)


def apply_label_deletion(uow: UnitOfWork, event: Envelope) -> None:
    data = event.data
    label = uow.session.get(Label, data["label_uuid"])
    if label is not None and label.version >= data["label_version"]:
        return
    if label is None:  # deleted before we saw it created: keep a tombstone all the same
        label = Label(
            uuid=data["label_uuid"], org=event.org, name="", synced=False, active=False, rule=[]
        )
        uow.session.add(label)
    label.deleted = True
    label.version = data["label_version"]
    _bump_revision(uow.session, event.org)


# --- messages -----------------------------------------------------------------------------------
def rule_message(data: Mapping[str, Any]) -> rules.Message:
    return rules.Message(
        text=data.get("text"),
        flow=data.get("flow_uuid"),
        node=data.get("node_uuid"),
        groups=frozenset(group["uuid"] for group in data.get("contact_groups") or ()),
        fields=data.get("contact_fields") or {},
    )


def label_message(uow: UnitOfWork, event: Envelope, *, cache: IndexCache) -> None:
    """Apply the org's labels and emit ``message.labeled``, also when none matched, so that
    the inbox knows labelling is done."""
    data = event.data
    matched = cache.index_for(uow.session, event.org).match(rule_message(data))
    labels = [label.uuid for label in matched]
    row = {
        "id": data["message_id"],
        "org": event.org,
        "contact_uuid": data["contact_uuid"],
        "flow_uuid": data.get("flow_uuid"),
        "node_uuid": data.get("node_uuid"),
        "text": data.get("text"),
        "groups": [group["uuid"] for group in data.get("contact_groups") or ()],
        "fields": dict(data.get("contact_fields") or {}),
        "external_id": data.get("external_id"),
        "simulation": data.get("simulation", False),
        "received_at": data["received_at"],
        "labels": labels,
        "labeled_at": utcnow(),
    }
    uow.rows_to_write("labeler.messages", _write_messages)[row["id"]] = row
    _emit_labeled(uow, event.org, data, matched)


def _write_messages(session: Session, rows: list[dict[str, Any]]) -> None:
    """A transaction's labelled messages in one upsert. A message is labelled once (the inbox
    sees to that); should ingest ever send the same message under a new event id, the newest
    labelling wins."""
    session.execute(_messages_upsert(dialect_name(session)), rows)


@functools.cache
def _messages_upsert(dialect: str) -> Any:
    """Built once per dialect (shared.db.dialect_insert): building it cost more than running it."""
    upsert = dialect_insert(dialect)(Message.__table__)
    return upsert.on_conflict_do_update(
        index_elements=["id"],
        set_={"labels": upsert.excluded.labels, "labeled_at": upsert.excluded.labeled_at},
    )


def _emit_labeled(uow: UnitOfWork, org: str, message: Mapping[str, Any], matched) -> None:
    uow.emit(
        MESSAGE_LABELED,
        org=org,
        data={
            "message_id": message["message_id"],
            "contact_uuid": message["contact_uuid"],
            "labels": [label.uuid for label in matched],
            "synced": [label.uuid for label in matched if label.synced],
            "external_id": message.get("external_id"),
            "simulation": message.get("simulation", False),
        },
    )


# --- relabel (CLI) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RelabelReport:
    examined: int
    changed: int


def relabel(
    store: ServiceStore,
    org: str,
    days: int,
    *,
    cache: IndexCache | None = None,
    batch: int = 500,
    now: datetime | None = None,
) -> RelabelReport:
    """Apply the current rules to the org's messages of the last ``days`` days; emit
    ``message.labeled`` only for messages whose labels changed. One transaction per batch."""
    cache = cache or IndexCache()
    since = (now or utcnow()) - timedelta(days=days)
    examined = changed = 0
    after: tuple[datetime, str] | None = None
    while True:
        with store.unit_of_work() as uow:
            query = select(Message).where(Message.org == org, Message.received_at >= since)
            if after is not None:
                query = query.where(tuple_(Message.received_at, Message.id) > after)
            rows = uow.session.scalars(
                query.order_by(Message.received_at, Message.id).limit(batch)
            ).all()
            if not rows:
                return RelabelReport(examined, changed)
            index = cache.index_for(uow.session, org)
            for row in rows:
                matched = index.match(
                    rules.Message(
                        row.text, row.flow_uuid, row.node_uuid, frozenset(row.groups), row.fields
                    )
                )
                new = [label.uuid for label in matched]
                if set(new) != set(row.labels):
                    row.labels, row.labeled_at = new, utcnow()
                    _emit_labeled(uow, org, _as_data(row), matched)
                    changed += 1
            examined += len(rows)
            after = (rows[-1].received_at, rows[-1].id)
            uow.commit()


def _as_data(row: Message) -> dict[str, Any]:
    return {
        "message_id": row.id,
        "contact_uuid": row.contact_uuid,
        "external_id": row.external_id,
        "simulation": row.simulation,
    }
