"""The flow engine port of flowbridge, and its adapter for the RapidPro API v2.

:class:`FlowEngine` is what U-Partners needs from a RapidPro-style engine (RapidPro, TextIt,
Weni Flows): read a contact, list groups / flows / labels, take contacts out of suspend groups
while a case is open and put them back when it closes, interrupt a flow, send a reply, start the
follow-up flow, and label / archive the contact's messages.

:class:`RapidProClient` implements it over API v2 with ``requests``:

* ``next`` cursors are followed (always against the configured host);
* bulk calls are split into requests of at most 100 items (the API's limit);
* 429 waits ``Retry-After`` (capped by ``max_wait``) and retries; 5xx and network errors are
  retried with exponential backoff; after ``max_attempts`` attempts :class:`FlowEngineUnavailable`;
* 401/403 (bad token) and 404 (bad base URL) raise :class:`FlowEngineConfigError` at once;
* other 4xx raise :class:`FlowEngineRejected` carrying the API's ``{"field": ["message"]}``.

The API token is a secret: it is kept out of ``repr()``, exception messages and log lines.
:class:`NullFlowEngine` stands in for organisations with no engine configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from shared import metrics
from shared.backoff import backoff

logger = logging.getLogger(__name__)

#: RapidPro refuses list fields with more items than this.
MAX_ITEMS_PER_REQUEST = 100


class FlowEngineError(Exception):
    """Base class of the errors the flow engine port raises."""


class FlowEngineUnavailable(FlowEngineError):
    """The engine did not answer usefully (5xx, 429, network) within the retry budget."""


class FlowEngineConfigError(FlowEngineError):
    """The organisation's engine settings are wrong (bad token or URL) or missing; not retried."""


class FlowEngineRejected(FlowEngineError):
    """The engine refused the request (400 and other 4xx); ``errors`` holds its field errors."""

    def __init__(self, message: str, errors: Mapping[str, list[str]]) -> None:
        super().__init__(message)
        self.errors: dict[str, list[str]] = dict(errors)


@dataclass(frozen=True)
class GroupRef:
    uuid: str
    name: str


@dataclass(frozen=True)
class Contact:
    uuid: str
    name: str | None
    status: str  # active / blocked / stopped / archived
    groups: tuple[GroupRef, ...] = ()
    language: str | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Group:
    uuid: str
    name: str
    is_smart: bool  # query based: the engine refuses to add or remove contacts by hand


@dataclass(frozen=True)
class Flow:
    uuid: str
    name: str
    type: str = "message"
    archived: bool = False


@dataclass(frozen=True)
class Label:
    uuid: str
    name: str


@dataclass(frozen=True)
class SentMessage:
    id: int
    uuid: str | None  # older RapidPro releases do not return message uuids


class FlowEngine(Protocol):
    """What U-Partners asks of a flow engine."""

    def get_contact(self, uuid: str) -> Contact | None: ...

    def list_groups(self) -> list[Group]: ...

    def list_flows(self) -> list[Flow]: ...

    def list_labels(self) -> list[Label]: ...

    def remove_from_group(self, contact_uuids: Sequence[str], group_uuid: str) -> None: ...

    def add_to_group(self, contact_uuids: Sequence[str], group_uuid: str) -> None: ...

    def interrupt(self, contact_uuids: Sequence[str]) -> None: ...

    def send_message(self, contact_uuid: str, text: str) -> SentMessage: ...

    def start_flow(
        self, flow_uuid: str, contact_uuids: Sequence[str], params: Mapping[str, Any]
    ) -> str | int: ...

    def message_ids(self, uuids: Iterable[str]) -> dict[str, int]: ...

    def label_messages(self, ids: Sequence[int], label_uuid: str) -> list[int]: ...

    def unlabel_messages(self, ids: Sequence[int], label_uuid: str) -> list[int]: ...

    def archive_messages(self, ids: Sequence[int]) -> list[int]: ...

    def restore_messages(self, ids: Sequence[int]) -> list[int]: ...


def _chunks(items: Sequence[Any], size: int = MAX_ITEMS_PER_REQUEST) -> Iterator[list[Any]]:
    unique = list(dict.fromkeys(items))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


class RapidProClient:
    """:class:`FlowEngine` over the RapidPro API v2 (``base_url`` like ``https://rapidpro.io``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: requests.Session | None = None,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        backoff: float = 0.5,
    ) -> None:
        root = base_url.strip().rstrip("/").removesuffix("/api/v2")
        parts = urlsplit(root)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FlowEngineConfigError(f"flow engine URL must be http(s)://host, got {root!r}")
        if not token:
            raise FlowEngineConfigError("no flow engine API token configured")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = root
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._api = f"{root}/api/v2/"
        self.__token = token
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._sleep = sleep
        self._timeout = timeout
        self._backoff = backoff

    def __repr__(self) -> str:
        return f"RapidProClient(base_url={self.base_url!r})"

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> RapidProClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------------

    def get_contact(self, uuid: str) -> Contact | None:
        results = self._request("GET", "contacts", params={"uuid": uuid}).json()["results"]
        for item in results:
            if item["uuid"] == uuid:
                groups = tuple(GroupRef(g["uuid"], g["name"]) for g in item.get("groups") or ())
                return Contact(
                    uuid=item["uuid"],
                    name=item.get("name"),
                    status=item.get("status") or "active",
                    groups=groups,
                    language=item.get("language"),
                )
        return None

    def list_groups(self) -> list[Group]:
        return [Group(g["uuid"], g["name"], bool(g.get("query"))) for g in self._get_all("groups")]

    def list_flows(self) -> list[Flow]:
        return [
            Flow(f["uuid"], f["name"], f.get("type") or "message", bool(f.get("archived")))
            for f in self._get_all("flows")
        ]

    def list_labels(self) -> list[Label]:
        return [Label(label["uuid"], label["name"]) for label in self._get_all("labels")]

    def message_ids(self, uuids: Iterable[str]) -> dict[str, int]:
        """Integer ids of messages by uuid (one request each); unknown uuids are left out."""
        found: dict[str, int] = {}
        for uuid in dict.fromkeys(uuids):
            results = self._request("GET", "messages", params={"uuid": uuid}).json()["results"]
            # engines without the uuid filter ignore it, so check what came back
            found.update({m["uuid"]: m["id"] for m in results if m.get("uuid") == uuid})
        return found

    # -- contacts ---------------------------------------------------------------------------

    def remove_from_group(self, contact_uuids: Sequence[str], group_uuid: str) -> None:
        self._contact_action("remove", contact_uuids, group=group_uuid)

    def add_to_group(self, contact_uuids: Sequence[str], group_uuid: str) -> None:
        self._contact_action("add", contact_uuids, group=group_uuid)

    def interrupt(self, contact_uuids: Sequence[str]) -> None:
        self._contact_action("interrupt", contact_uuids)

    def _contact_action(self, action: str, contacts: Sequence[str], **extra: str) -> None:
        for chunk in _chunks(contacts):
            self._request(
                "POST", "contact_actions", payload={"contacts": chunk, "action": action, **extra}
            )

    # -- messages and flows -----------------------------------------------------------------

    def send_message(self, contact_uuid: str, text: str) -> SentMessage:
        body = self._request(
            "POST", "messages", payload={"contact": contact_uuid, "text": text}
        ).json()
        return SentMessage(id=body["id"], uuid=body.get("uuid"))

    def start_flow(
        self,
        flow_uuid: str,
        contact_uuids: Sequence[str],
        params: Mapping[str, Any],
        *,
        restart_participants: bool = True,
    ) -> str | int:
        """Start the flow for the contacts (one start per 100); returns the first start's uuid
        (or id on engines that return no uuid)."""
        started: list[str | int] = []
        for chunk in _chunks(contact_uuids):
            payload = {
                "flow": flow_uuid,
                "contacts": chunk,
                "restart_participants": restart_participants,
                "params": dict(params),
            }
            body = self._request("POST", "flow_starts", payload=payload).json()
            started.append(body.get("uuid") or body["id"])
        if not started:
            raise ValueError("start_flow needs at least one contact")
        return started[0]

    def label_messages(self, ids: Sequence[int], label_uuid: str) -> list[int]:
        """Label messages; returns the ids the engine no longer has (as for all message actions)."""
        return self._message_action("label", ids, label=label_uuid)

    def unlabel_messages(self, ids: Sequence[int], label_uuid: str) -> list[int]:
        return self._message_action("unlabel", ids, label=label_uuid)

    def archive_messages(self, ids: Sequence[int]) -> list[int]:
        return self._message_action("archive", ids)

    def restore_messages(self, ids: Sequence[int]) -> list[int]:
        return self._message_action("restore", ids)

    def _message_action(self, action: str, ids: Sequence[int], **extra: str) -> list[int]:
        failures: list[int] = []
        for chunk in _chunks(ids):
            response = self._request(
                "POST", "message_actions", payload={"messages": chunk, "action": action, **extra}
            )
            if response.status_code == 200 and response.content:
                failures.extend(response.json().get("failures", []))
        return failures

    # -- HTTP -------------------------------------------------------------------------------

    def _get_all(self, endpoint: str, params: Mapping[str, str] | None = None) -> Iterator[Any]:
        url: str | None = f"{self._api}{endpoint}.json"
        while url:
            page = self._request("GET", url, params=params).json()
            yield from page.get("results", [])
            url, params = self._same_origin(page.get("next")), None

    def _same_origin(self, url: str | None) -> str | None:
        """Follow ``next`` on our own host: the token never goes anywhere else."""
        if not url:
            return None
        parts = urlsplit(url)
        return f"{self._origin}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _request(
        self,
        method: str,
        endpoint_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        url = endpoint_or_url
        if "://" not in url:
            url = f"{self._api}{endpoint_or_url}.json"
        path = urlsplit(url).path
        what = f"{method} {path}"
        endpoint = metrics.flow_engine_endpoint(path)
        headers = {"Authorization": f"Token {self.__token}", "Accept": "application/json"}
        problem = ""
        for attempt in range(1, self._max_attempts + 1):
            started = time.perf_counter()
            try:
                response = self._session.request(
                    method, url, params=params, json=payload, headers=headers, timeout=self._timeout
                )
            except requests.RequestException as exc:
                metrics.record_flow_engine_call(endpoint, "error", time.perf_counter() - started)
                problem = f"network error: {type(exc).__name__}: {exc}"
                wait = self._backoff_delay(attempt)
            else:
                status = response.status_code
                metrics.record_flow_engine_call(endpoint, status, time.perf_counter() - started)
                if status < 300:
                    self._check_json(response, what)
                    return response
                if status == 429:
                    problem = "rate limited (429)"
                    wait = self._retry_after(response, attempt)
                elif status >= 500:
                    problem = f"server error ({status})"
                    wait = self._backoff_delay(attempt)
                elif status in (401, 403):
                    raise FlowEngineConfigError(
                        f"flow engine refused the API token ({status} on {what})"
                    )
                elif status == 404:
                    raise FlowEngineConfigError(f"{what} not found (404): check the engine URL")
                else:
                    errors = _field_errors(response)
                    summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
                    raise FlowEngineRejected(
                        self._scrub(f"flow engine rejected {what} ({status}): {summary}"), errors
                    )
            problem = self._scrub(problem)
            if attempt < self._max_attempts:
                logger.warning(
                    "flow engine %s: %s; retry %d of %d in %.1fs",
                    what,
                    problem,
                    attempt,
                    self._max_attempts - 1,
                    wait,
                )
                self._sleep(wait)
        raise FlowEngineUnavailable(
            f"flow engine unavailable: {what} failed {self._max_attempts} times; last: {problem}"
        )

    def _check_json(self, response: requests.Response, what: str) -> None:
        if response.status_code == 204 or not response.content:
            return
        try:
            response.json()
        except ValueError:
            raise FlowEngineConfigError(
                f"{what} did not answer JSON: check the engine URL"
            ) from None

    def _backoff_delay(self, attempt: int) -> float:
        # Attempts count from 1 here: the first retry waits ``self._backoff``.
        return backoff(attempt - 1, base=self._backoff, cap=self._max_wait)

    def _retry_after(self, response: requests.Response, attempt: int) -> float:
        value = response.headers.get("Retry-After", "").strip()
        seconds: float | None = None
        if value:
            try:
                seconds = float(value)
            except ValueError:
                try:
                    when = parsedate_to_datetime(value)
                    seconds = (when - datetime.now(UTC)).total_seconds()
                except (TypeError, ValueError):
                    seconds = None
        if seconds is None:
            seconds = self._backoff_delay(attempt)
        return min(max(seconds, 0.0), self._max_wait)

    def _scrub(self, text: str) -> str:
        return text.replace(self.__token, "[token]")


def _field_errors(response: requests.Response) -> dict[str, list[str]]:
    """The API's ``{"field": ["message"]}`` / ``{"detail": "..."}`` as ``{field: [messages]}``."""
    try:
        body = response.json()
    except ValueError:
        return {"detail": [response.text[:200]]}
    if not isinstance(body, dict):
        return {"detail": [str(body)[:200]]}
    errors: dict[str, list[str]] = {}
    for key, value in body.items():
        values = value if isinstance(value, list) else [value]
        errors[str(key)] = [str(v) for v in values]
    return errors


class NullFlowEngine:
    """For organisations with no engine configured: reads are empty, bulk actions do nothing.

    Sending a reply or starting a flow cannot be done without an engine, so those raise
    :class:`FlowEngineConfigError` rather than pretend to succeed.
    """

    def __repr__(self) -> str:
        return "NullFlowEngine()"

    def get_contact(self, uuid: str) -> Contact | None:
        return None

    def list_groups(self) -> list[Group]:
        return []

    def list_flows(self) -> list[Flow]:
        return []

    def list_labels(self) -> list[Label]:
        return []

    def remove_from_group(self, contact_uuids: Sequence[str], group_uuid: str) -> None:
        return None

    def add_to_group(self, contact_uuids: Sequence[str], group_uuid: str) -> None:
        return None

    def interrupt(self, contact_uuids: Sequence[str]) -> None:
        return None

    def send_message(self, contact_uuid: str, text: str) -> SentMessage:
        raise FlowEngineConfigError("no flow engine is configured for this organisation")

    def start_flow(
        self, flow_uuid: str, contact_uuids: Sequence[str], params: Mapping[str, Any]
    ) -> str | int:
        raise FlowEngineConfigError("no flow engine is configured for this organisation")

    def message_ids(self, uuids: Iterable[str]) -> dict[str, int]:
        return {}

    def label_messages(self, ids: Sequence[int], label_uuid: str) -> list[int]:
        return []

    def unlabel_messages(self, ids: Sequence[int], label_uuid: str) -> list[int]:
        return []

    def archive_messages(self, ids: Sequence[int]) -> list[int]:
        return []

    def restore_messages(self, ids: Sequence[int]) -> list[int]:
        return []
