"""Fault injection: a fault set through ``/_fake/workspaces/<ws>/faults`` makes the next matching
API v2 requests wait, fail with a status and body of its choosing, or both.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response

from .serialize import json_response
from .state import ControlError, FakeState, Fault, Workspace, positive_int


def make_fault(state: FakeState, spec: dict[str, Any]) -> Fault:
    """A fault from a control request's spec (status 503 unless it says otherwise)."""
    status = spec.get("status", 503)
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
        raise ControlError("'status' must be an HTTP status or null (delay only)")
    delay = spec.get("delay", 0.0)
    count = spec.get("count")
    if not isinstance(delay, int | float) or delay < 0:
        raise ControlError("'delay' must be a number of seconds")
    if count is not None:
        positive_int(count, "count")
    retry_after = spec.get("retry_after")
    if retry_after is None and status == 429:
        retry_after = 1
    return Fault(
        id=state.next_id("fault"),
        status=status,
        delay=float(delay),
        count=count,
        path=spec.get("path"),
        retry_after=retry_after,
        body=spec.get("body"),
    )


def take_fault(ws: Workspace, endpoint: str) -> Fault | None:
    """The first fault whose path the endpoint starts with, one use of its count spent."""
    for fault in ws.faults:
        prefix = (fault.path or "").removeprefix("/api/v2/").removeprefix("/")
        if endpoint.startswith(prefix):
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    ws.faults.remove(fault)
            return fault
    return None


def fault_response(fault: Fault) -> Response | None:
    """Wait the fault's delay, then its answer; ``None`` when it only delays the request."""
    if fault.delay:
        time.sleep(fault.delay)
    if fault.status is None:
        return None
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    body = fault.body if fault.body is not None else {"detail": "Injected fault"}
    if isinstance(body, str):
        return Response(body, status=fault.status, headers=headers)
    return json_response(body, fault.status, headers)
