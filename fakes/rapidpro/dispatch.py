"""Answering one API v2 request: the token picks the workspace, an injected fault or the rate limit
may answer first, else the endpoint from :data:`.api.ENDPOINTS` does; every request is logged.
"""

from __future__ import annotations

import math

from flask import Response, request

from .api import ENDPOINTS
from .faults import fault_response, take_fault
from .serialize import json_response
from .state import FakeState, Workspace, now_iso
from .validation import ApiError


def _authenticate(state: FakeState) -> Workspace:
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(403, {"detail": "Authentication credentials were not provided."})
    scheme, _, key = header.partition(" ")
    ws = state.by_token(key.strip()) if scheme.lower() == "token" and key.strip() else None
    if ws is None:
        raise ApiError(403, {"detail": "Invalid token"})
    return ws


def _throttle(state: FakeState, ws: Workspace) -> None:
    if ws.rate_limit is None:
        return
    limit, window = ws.rate_limit
    now = state.clock()
    while ws.hits and ws.hits[0] <= now - window:
        ws.hits.popleft()
    if len(ws.hits) >= limit:
        wait = max(1, math.ceil(ws.hits[0] + window - now))
        raise ApiError(
            429,
            {"detail": f"Request was throttled. Expected available in {wait} seconds."},
            {"Retry-After": str(wait)},
        )
    ws.hits.append(now)


def handle_api(state: FakeState, endpoint: str) -> Response:
    """The answer to the API v2 request being served; ``endpoint`` is e.g. ``contacts``."""
    workspace: str | None = None
    try:
        if endpoint not in ENDPOINTS:
            raise ApiError(404, {"detail": "Not found."})
        with state.lock:
            ws = _authenticate(state)
            workspace = ws.name
            fault = take_fault(ws, endpoint)
        if fault is not None:
            answer = fault_response(fault)
            if answer is not None:
                return answer
        with state.lock:
            _throttle(state, ws)
            handler = ENDPOINTS[endpoint].get(request.method)
            if handler is None:
                raise ApiError(405, {"detail": f'Method "{request.method}" not allowed.'})
            return handler(state, ws)
    except ApiError as exc:
        return json_response(exc.body, exc.status, exc.headers)
    finally:
        request.environ["fake.workspace"] = workspace


def log_request(state: FakeState, endpoint: str, response: Response) -> None:
    """Append the request and its answer's status to the state's request log."""
    body = request.get_json(silent=True, force=True) if request.get_data() else None
    with state.lock:
        state.request_log.append(
            {
                "seq": state.next_seq(),
                "time": now_iso(),
                "workspace": request.environ.get("fake.workspace"),
                "method": request.method,
                "endpoint": endpoint,
                "path": request.path,
                "query": {k: request.args.getlist(k) for k in request.args},
                "body": body,
                "status": response.status_code,
            }
        )
