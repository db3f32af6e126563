"""Every service of the product and the processes each one runs, in one place.

The command line (services/cli.py), ``upartners run`` (services/embedded.py), ``upartners
stack`` (services/stack.py), the tests and the benchmarks read this list instead of keeping their
own. Each service is a package ``services/<name>/`` with the same file names: ``models.py``
(its tables, ``open_store`` and ``MIGRATIONS``), and where it has them ``app.py`` (its web
process, ``create_app``) and ``worker.py`` (its event consumer, ``subscriptions``). Every
service has tables, and so a relay that publishes its outbox.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from shared.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    web: bool  # serves HTTP: ``upartners web <name>``
    worker: bool  # consumes events: ``upartners worker <name>``

    def models(self) -> ModuleType:
        return importlib.import_module(f"services.{self.name}.models")

    def worker_module(self) -> ModuleType:
        assert self.worker, f"{self.name} consumes no events"
        return importlib.import_module(f"services.{self.name}.worker")

    def open_store(self, settings: Settings, *, pre_ping: bool = True) -> Any:
        return self.models().open_store(settings, pre_ping=pre_ping)

    @property
    def processes(self) -> tuple[str, ...]:
        """The names of its processes, as logs, ``upartners stack`` and compose call them."""
        kinds = (("web", self.web), ("worker", self.worker), ("relay", True))
        return tuple(f"{kind}-{self.name}" for kind, has in kinds if has)


SERVICES: tuple[Service, ...] = (
    Service("ingest", web=True, worker=False),
    Service("labeler", web=False, worker=True),
    Service("flowbridge", web=False, worker=True),
    Service("cases", web=True, worker=True),
)
NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
WEB: tuple[str, ...] = tuple(s.name for s in SERVICES if s.web)
WORKERS: tuple[str, ...] = tuple(s.name for s in SERVICES if s.worker)


def service(name: str) -> Service:
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service {name!r}; the services are {', '.join(NAMES)}")


def models_of(name: str) -> ModuleType:
    return service(name).models()


def migrate(settings: Settings, names: Iterable[str] = NAMES) -> None:
    """Bring each service's tables to its newest migration (safe to run from many processes)."""
    for name in names:
        models = models_of(name)
        store = models.open_store(settings)
        store.db.migrate(models.MIGRATIONS)
        store.db.dispose()
