"""Composition of the contract fake: :func:`create_app` builds the Flask app, with its state seeded
or read back from the state file, the API v2 route and the ``/_fake/`` control routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, request

from .control import register_control
from .dispatch import handle_api, log_request
from .persistence import restore_state, save_state
from .seed import SEEDS
from .state import DEFAULT_PAGE_SIZE, FakeState, load_workspace


def create_app(
    *,
    seed: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    clock: Callable[[], float] = time.monotonic,
    state: FakeState | None = None,
    state_file: Path | None = None,
) -> Flask:
    """Build the contract fake's Flask app.

    ``page_size`` is the default for new workspaces; ``clock`` (seconds, monotonic) drives the
    rate limiter, so tests can share a fake clock with the client's ``sleep``. With a
    ``state_file`` that exists, the workspaces are read from it instead of seeded, and every
    request that may change them writes it again.
    """
    state = state or FakeState(page_size=page_size, clock=clock)
    if state_file is not None and state_file.exists():
        restore_state(state, json.loads(state_file.read_text(encoding="utf-8")))
    elif seed is not None:
        if seed not in SEEDS:
            raise ValueError(f"unknown seed {seed!r}; known: {', '.join(SEEDS)}")
        load_workspace(state, SEEDS[seed]())
    if state_file is not None:
        save_state(state, state_file)
    app = Flask(__name__)
    app.extensions["rapidpro_fake"] = state

    if state_file is not None:

        @app.after_request
        def keep(response: Response) -> Response:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                save_state(state, state_file)
            return response

    @app.route("/api/v2/<path:name>", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
    def api(name: str) -> Response:
        endpoint = name.removesuffix(".json") if name.endswith(".json") else f"{name}/"
        response = handle_api(state, endpoint)
        log_request(state, endpoint, response)
        return response

    register_control(app, state)
    return app
