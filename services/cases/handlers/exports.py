"""Exports: asking for one (its row and ``export.requested``, in one transaction), the
requester's list, one export and its file; and, in the cases worker, building the file and
deleting the files past their retention.

Building streams: rows are read in batches by keyset (handlers/export_kinds.py), each batch in
its own short transaction (on SQLite a transaction holds the write lock), written to a partial
file, and ``progress`` is recorded every few thousand rows. The export's state, not the
worker's inbox, makes the event's effect happen once: every change of state is committed by
the builder itself and guarded by ``attempt``, so a redelivered event finds a done (or failed)
export and does nothing, restarts one a crashed worker left running, and a builder that another
took over from stops at its next write without touching the row.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.cases.domain import Actor, Conflict, NotFound
from services.cases.export_files import CONTENT_TYPES, open_writer
from services.cases.handlers.access import actors_of
from services.cases.handlers.export_kinds import KINDS, load_filters, stored_filters
from services.cases.handlers.notifications import notify_export_ready
from services.cases.handlers.rows import newest_first
from services.cases.models import Export, User
from services.cases.views import ExportView, Page
from shared import events as ev
from shared.bus.dispatch import TRANSIENT, Handler
from shared.db import new_id, utcnow
from shared.events import Envelope
from shared.settings import Settings
from shared.uow import ServiceStore, UnitOfWork

log = logging.getLogger(__name__)

BATCH = 10_000  # rows read per transaction (each batch a query: fewer is faster, see bench)
PROGRESS_EVERY = 20_000  # rows between two progress updates
SWEEP_BATCH = 500  # expired files deleted per sweep
MAX_PENDING = 3  # queued or running exports one user may have at once
UNFINISHED = ("queued", "running")


class Superseded(Exception):
    """Another worker took the export over (a redelivery): this one stops, writing nothing."""


# --- the API's commands -------------------------------------------------------------------------
def request_export(
    store: ServiceStore, actor: Actor, kind: str, file_format: str, filters: dict[str, Any]
) -> ExportView:
    """Record the export and ask the worker to build it (``export.requested``)."""
    KINDS[kind].check(actor, filters)
    with store.unit_of_work() as uow:
        session = uow.session
        pending = session.scalar(
            select(func.count())
            .select_from(Export)
            .where(Export.user_id == actor.user_id, Export.state.in_(UNFINISHED))
        )
        if (pending or 0) >= MAX_PENDING:
            raise Conflict(
                "TOO_MANY_EXPORTS", f"{MAX_PENDING} exports are being built: wait for one."
            )
        export = Export(
            id=new_id(),
            org=actor.org,
            user_id=actor.user_id,
            kind=kind,
            format=file_format,
            filters=stored_filters(kind, filters),
            state="queued",
            progress=0,
            attempt=0,
            created_at=utcnow(),
        )
        session.add(export)
        uow.emit(
            ev.EXPORT_REQUESTED,
            org=actor.org,
            data={"export_id": export.id, "kind": kind, "format": file_format},
        )
        uow.commit()
        return export_view(export, utcnow())


def list_exports(
    store: ServiceStore, actor: Actor, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """The caller's own exports, newest first."""
    with store.unit_of_work() as uow:
        conditions = [Export.org == actor.org, Export.user_id == actor.user_id]
        page, next_cursor = newest_first(
            uow.session, Export, Export.created_at, conditions, cursor, limit
        )
        now = utcnow()
        return Page([export_view(e, now) for e in page], next_cursor)


def get_export(store: ServiceStore, actor: Actor, export_id: str) -> ExportView:
    with store.unit_of_work() as uow:
        return export_view(_load(uow.session, actor, export_id), utcnow())


def export_file(
    store: ServiceStore, settings: Settings, actor: Actor, export_id: str
) -> tuple[Path, str, str]:
    """The file of a done export of the caller: its path, the name to download it as, and its
    content type. Anyone else's export is not found; one not ready (or expired) a conflict."""
    with store.unit_of_work() as uow:
        export = _load(uow.session, actor, export_id)
    state = export_view(export, utcnow()).state
    path = settings.exports_path / export.file_name if export.file_name else None
    if state != "done" or path is None or not path.is_file():
        raise Conflict("EXPORT_NOT_READY", f"The export is {state}, not ready to download.")
    name = f"{export.kind}-{export.created_at:%Y%m%d-%H%M%S}.{export.format}"
    return path, name, CONTENT_TYPES[export.format]


def _load(session: Session, actor: Actor, export_id: str) -> Export:
    export = session.get(Export, export_id)
    if export is None or export.org != actor.org or export.user_id != actor.user_id:
        raise NotFound("export")
    return export


def export_view(export: Export, now: datetime) -> ExportView:
    state = export.state
    if state == "done" and export.expires_at is not None and export.expires_at <= now:
        state = "expired"  # the sweep will delete its file
    return ExportView(
        id=export.id,
        kind=export.kind,
        format=export.format,
        filters=dict(export.filters),
        state=state,
        progress=export.progress,
        total=export.total,
        created_at=export.created_at,
        finished_at=export.finished_at,
        expires_at=export.expires_at,
        file=f"/api/v1/exports/{export.id}/file" if state == "done" else None,
    )


# --- the worker ---------------------------------------------------------------------------------
def export_handler(settings: Settings, **options: Any) -> Handler:
    """The cases worker's handler of ``export.requested`` (services/cases/worker.py)."""

    def on_export_requested(uow: UnitOfWork, event: Envelope) -> None:
        build_export(uow.session, settings, event.org, event.data["export_id"], **options)

    return on_export_requested


def build_export(
    session: Session,
    settings: Settings,
    org: str,
    export_id: str,
    *,
    batch: int = BATCH,
    progress_every: int = PROGRESS_EVERY,
) -> str:
    """Build one export's file; answers the state it left the export in. Each step commits on
    its own (the caller's transaction then only records the event as handled)."""
    export = session.get(Export, export_id)
    if export is None or export.org != org:
        log.warning("export %s of %s is unknown; ignored", export_id, org)
        return "unknown"
    if export.state not in UNFINISHED:
        state = export.state
        session.commit()
        return state  # done, failed or expired: a redelivered event changes nothing
    attempt = _claim(session, export)
    if attempt is None:
        return "taken"
    folder = settings.exports_path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{export.id}.{attempt}.partial"
    for left in folder.glob(f"{export.id}.*.partial"):
        left.unlink(missing_ok=True)  # a crashed attempt's
    try:
        written = _write_file(session, export, attempt, partial, batch, progress_every)
        final = folder / f"{export.id}.{export.format}"
        partial.replace(final)
        _finish(session, settings, export, attempt, final.name, written)
        return "done"
    except Superseded:
        session.rollback()
        partial.unlink(missing_ok=True)
        log.info("export %s was taken over by another worker", export.id)
        return "taken"
    except TRANSIENT:
        session.rollback()
        partial.unlink(missing_ok=True)
        raise  # the dispatcher retries; the retry restarts the export
    except Exception:
        log.exception("export %s failed", export.id)
        session.rollback()
        partial.unlink(missing_ok=True)
        _guarded(session, export.id, attempt, state="failed", finished_at=utcnow())
        session.commit()
        return "failed"


def _claim(session: Session, export: Export) -> int | None:
    attempt = export.attempt + 1
    claimed = session.execute(
        update(Export)
        .where(
            Export.id == export.id,
            Export.attempt == export.attempt,
            Export.state.in_(UNFINISHED),
        )
        .values(state="running", attempt=attempt, progress=0, started_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return attempt if claimed.rowcount == 1 else None


def _guarded(session: Session, export_id: str, attempt: int, **values: Any) -> None:
    """Change the export if this worker still holds it; else ``Superseded``."""
    changed = session.execute(
        update(Export)
        .where(Export.id == export_id, Export.attempt == attempt, Export.state == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise Superseded(export_id)


def _write_file(
    session: Session, export: Export, attempt: int, path: Path, batch: int, progress_every: int
) -> int:
    kind = KINDS[export.kind]
    user = session.get(User, export.user_id)
    if user is None or not user.active:
        raise PermissionError("the requester is no longer an active user")
    actor = actors_of(session, [user])[user.id]  # what they may see now, not when they asked
    filters = load_filters(export.kind, export.filters)
    _guarded(session, export.id, attempt, total=kind.count(session, actor, filters))
    session.commit()
    writer = open_writer(path, export.format, kind.columns, kind.name)
    written = reported = 0
    key = None
    try:
        while True:
            rows, key = kind.read(session, actor, filters, key, batch)
            session.commit()  # each batch its own transaction: nothing held between them
            for row in rows:
                writer.write(row)
            written += len(rows)
            if len(rows) < batch:
                break
            if written - reported >= progress_every:
                _guarded(session, export.id, attempt, progress=written)
                session.commit()
                reported = written
    finally:
        writer.close()
    return written


def _finish(
    session: Session, settings: Settings, export: Export, attempt: int, name: str, written: int
) -> None:
    now = utcnow()
    _guarded(
        session,
        export.id,
        attempt,
        state="done",
        progress=written,
        total=written,
        file_name=name,
        finished_at=now,
        expires_at=now + timedelta(days=settings.export_retention_days),
    )
    notify_export_ready(session, export.user_id, export.id)
    session.commit()


def sweep(store: ServiceStore, settings: Settings) -> int:
    """The cases worker's chore: every expired export's file deleted; how many."""
    swept = 0
    while True:
        with store.unit_of_work() as uow:
            done = sweep_expired(uow.session, settings)
        swept += done
        if done < SWEEP_BATCH:
            return swept


def sweep_expired(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Delete the files of exports past their retention and mark them expired; how many."""
    now = now or utcnow()
    rows = session.execute(
        select(Export.id, Export.file_name)
        .where(Export.state == "done", Export.expires_at <= now)
        .limit(SWEEP_BATCH)
    ).all()
    for row in rows:
        if row.file_name:
            (settings.exports_path / row.file_name).unlink(missing_ok=True)
    if rows:
        session.execute(
            update(Export)
            .where(Export.id.in_([row.id for row in rows]), Export.state == "done")
            .values(state="expired", file_name=None)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return len(rows)
