"""The bookkeeping of flowbridge's handlers: :class:`Steps` saves a handler's progress before and
after each call to the flow engine, holds contacts with leases, and records each non-idempotent
call (an effect) as started and finished, so that a redelivered event does not repeat it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from services.flowbridge import domain
from services.flowbridge.flow_engine import (
    FlowEngineConfigError,
    FlowEngineRejected,
    FlowEngineUnavailable,
)
from services.flowbridge.models import ContactRecord, Effect
from shared.bus.dispatch import TransientError
from shared.db import insert_statement, new_id, utcnow
from shared.events import Envelope
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

# Effect statuses: pending (not tried yet), started (the call may be under way), retry (the last
# call failed and may be tried again), and the final ones.
PENDING, STARTED, RETRY = "pending", "started", "retry"
DONE, FAILED, SKIPPED = "done", "failed", "skipped"
FINAL = (DONE, FAILED, SKIPPED)


@dataclass(frozen=True)
class Options:
    """What the handlers are given besides the event: the clock, the lease, the reply's budget."""

    clock: Callable[[], datetime] = utcnow
    # How long a contact (or a side effect) stays held by a handler that saves no progress;
    # longer than one flow engine call can take, or a slow handler could lose its hold.
    lease: timedelta = timedelta(seconds=60)
    # How long a reply is retried while the engine is unavailable before outgoing.failed. Keep
    # it under what the queue allows (delivery limit x the dispatcher's 20 s in-place budget),
    # or the event is dead-lettered before the failure is reported.
    send_budget: timedelta = timedelta(seconds=60)


DEFAULT_OPTIONS = Options()


class Steps:
    """Lets a handler commit its progress before the event counts as handled.

    The unit of work writes the event's inbox row and outbox rows only when the dispatcher
    commits it, after the handler returned. Until then the handler may commit what it has done
    so far through ``save`` (a side effect about to happen, one that happened): a crash in
    between leaves the event unhandled, so it is redelivered, and the progress already saved
    tells the new attempt what not to repeat. Final state and events come after the last call.

    Steps also holds contacts: one event at a time works on a contact, across replicas, through
    a lease in the contact's row. It is released in the final transaction, or at once when the
    handler fails, and it expires when the process died.
    """

    def __init__(self, uow: UnitOfWork, event: Envelope, options: Options) -> None:
        self.uow = uow
        self.session: Session = uow.session
        self.event = event
        self.clock = options.clock
        self.lease = options.lease
        self.token = new_id()  # this attempt, as a holder of leases
        self._holds_contacts = False
        self._holds_effects = False

    def __enter__(self) -> Steps:
        ledgers = tuple(t for t in (self.uow.store.inbox, self.uow.store.outbox) if t)
        if any(isinstance(obj, ledgers) for obj in self.session.new):
            # A commit here would mark the event handled (or publish its events) half-way.
            raise RuntimeError("Steps needs a unit of work that writes its ledgers at commit")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if exc_type is None:
            self._release(commit=False)  # committed with the final state, by the dispatcher
        elif issubclass(exc_type, Exception):
            self.session.rollback()
            self._release(commit=True)
        # Anything else (the process is being killed) leaves the leases to expire.

    def save(self) -> None:
        """Commit what the handler did so far (never the inbox row), extending its holds."""
        if self._holds_contacts:
            self.session.execute(
                update(ContactRecord)
                .where(ContactRecord.held_by == self.token)
                .values(held_until=self.clock() + self.lease)
            )
        self.session.commit()

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call the flow engine with no transaction open; its outage is a transient failure."""
        self.save()
        try:
            return method(*args)
        except FlowEngineUnavailable as exc:
            raise TransientError(str(exc)) from exc

    def hold_contact(self, org: str, contact_uuid: str) -> ContactRecord:
        session, now = self.session, self.clock()
        session.execute(
            insert_statement(session, ContactRecord)
            .values(org=org, contact_uuid=contact_uuid, removed_groups=[])
            .on_conflict_do_nothing(index_elements=["org", "contact_uuid"])
        )
        taken = session.execute(
            update(ContactRecord)
            .where(
                ContactRecord.org == org,
                ContactRecord.contact_uuid == contact_uuid,
                or_(
                    ContactRecord.held_by.is_(None),
                    ContactRecord.held_until < now,
                    ContactRecord.held_by == self.token,
                ),
            )
            .values(held_by=self.token, held_until=now + self.lease)
        ).rowcount
        if not taken:
            session.rollback()
            raise TransientError(f"contact {contact_uuid} is being updated by another event")
        self._holds_contacts = True
        self.save()
        return session.get(ContactRecord, (org, contact_uuid), populate_existing=True)

    def run_effect(
        self,
        org: str,
        key: str,
        kind: str,
        perform: Callable[[], dict[str, Any]],
        *,
        budget: timedelta | None = None,
    ) -> Effect:
        """Perform a non-idempotent call once: a done (or failed) effect is not repeated.

        The effect is saved as started before the call and as done right after it. Only a crash
        between the engine's answer and that second commit makes a later attempt repeat it.
        """
        effect = self._effect_row(org, key, kind)
        if effect.status in FINAL:
            return effect
        now = self.clock()
        if effect.status == STARTED:
            if effect.held_by not in (None, self.token) and _after(effect.held_until, now):
                self.session.rollback()
                raise TransientError(f"{key} is being performed by another attempt")
            log.warning(
                "%s: an earlier attempt stopped without recording the engine's answer; "
                "performing it again (it may happen twice)",
                key,
            )
        effect.status = STARTED
        effect.attempts += 1
        effect.held_by, effect.held_until = self.token, now + self.lease
        self._holds_effects = True
        effect.first_attempt_at = effect.first_attempt_at or now
        self.save()
        try:
            result = perform()
        except FlowEngineUnavailable as exc:
            effect.held_by = effect.held_until = None
            out_of_budget = budget is not None and self.clock() - effect.first_attempt_at >= budget
            if out_of_budget:
                self._finish(effect, FAILED, error=domain.UNAVAILABLE, detail=str(exc))
                return effect
            effect.status, effect.error = RETRY, str(exc)[:500]
            self.save()
            raise TransientError(str(exc)) from exc
        except FlowEngineConfigError as exc:
            self._finish(effect, FAILED, error=domain.CONFIGURATION, detail=str(exc))
            return effect
        except FlowEngineRejected as exc:
            self._finish(effect, FAILED, error=domain.REJECTED, detail=str(exc))
            return effect
        self._finish(effect, DONE, result=result)
        return effect

    def skip_effect(self, org: str, key: str, kind: str, reason: str) -> Effect:
        """Record that an effect was not performed (e.g. the org has no flow engine)."""
        effect = self._effect_row(org, key, kind)
        if effect.status not in FINAL:
            self._finish(effect, SKIPPED, error=reason)
        return effect

    def _effect_row(self, org: str, key: str, kind: str) -> Effect:
        session = self.session
        session.execute(
            insert_statement(session, Effect)
            .values(org=org, key=key, kind=kind, event_id=self.event.id, status=PENDING, attempts=0)
            .on_conflict_do_nothing(index_elements=["org", "key"])
        )
        return session.scalars(
            select(Effect)
            .where(Effect.org == org, Effect.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()

    def _finish(
        self,
        effect: Effect,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        detail: str | None = None,
    ) -> None:
        if detail:
            log.warning("%s %s: %s", effect.key, status, detail)
        effect.status, effect.error = status, error
        effect.result = (
            result if result is not None else ({"detail": detail[:500]} if detail else None)
        )
        effect.held_by = effect.held_until = None
        effect.finished_at = self.clock()
        self.save()

    def _release(self, *, commit: bool) -> None:
        if not (self._holds_contacts or self._holds_effects):
            return
        try:
            for model in (ContactRecord, Effect):
                self.session.execute(
                    update(model)
                    .where(model.held_by == self.token)
                    .values(held_by=None, held_until=None)
                )
            if commit:
                self.session.commit()
        except Exception as exc:  # the database is down too: the lease will expire
            log.warning("could not release the hold of %s: %s", self.event.id, exc)
            self.session.rollback()


def _after(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment > now
