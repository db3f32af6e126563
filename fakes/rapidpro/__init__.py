"""A contract fake of the RapidPro API v2, in memory (Flask), for tests and the local demo.

It is not a flow engine: it runs no flows. It answers the API v2 calls U-Partners makes the way
RapidPro answers them (token auth, cursor pages, validation errors, rate limiting) and keeps the
state those calls change (group membership, outgoing messages, flow starts with their params,
message labels and archiving), so tests can check what the product asked the engine to do.

Run it with ``python -m fakes.rapidpro --port 8001 --seed demo``.

Where things live:

* :mod:`~fakes.rapidpro.app`         - ``create_app``: builds the Flask app from the modules below.
* :mod:`~fakes.rapidpro.api`         - the API v2 endpoints.
* :mod:`~fakes.rapidpro.dispatch`    - token auth, rate limit and request log around each endpoint.
* :mod:`~fakes.rapidpro.validation`  - request bodies, field checks and ``ApiError``.
* :mod:`~fakes.rapidpro.serialize`   - the JSON shape of contacts, messages and the rest.
* :mod:`~fakes.rapidpro.control`     - the test-only ``/_fake/`` control endpoints.
* :mod:`~fakes.rapidpro.faults`      - injected faults: delays and error answers.
* :mod:`~fakes.rapidpro.emit`        - a contact writing in: the webhook POSTed to the ingest.
* :mod:`~fakes.rapidpro.webhooks`    - the webhook body shapes.
* :mod:`~fakes.rapidpro.state`       - the in-memory workspaces and how things are added and found.
* :mod:`~fakes.rapidpro.persistence` - the optional state file.
* :mod:`~fakes.rapidpro.seed`        - the ``--seed demo`` workspace and its fixed identifiers.
"""

from .app import create_app
from .seed import (
    DEMO_ACTIVATE_NODE,
    DEMO_CHANNEL,
    DEMO_CONTACT_AMINA,
    DEMO_CONTACT_BRIAN,
    DEMO_CONTACT_CHLOE,
    DEMO_CONTACT_DAVID,
    DEMO_FLOW_ACTIVATE,
    DEMO_FLOW_POLL,
    DEMO_GROUP_ADULTS,
    DEMO_GROUP_BOT,
    DEMO_GROUP_UREPORTERS,
    DEMO_LABEL,
    DEMO_POLL_QUESTION_NODE,
    DEMO_POLL_WAIT_NODE,
    DEMO_TOKEN,
    DEMO_WORKSPACE,
    demo_seed,
)
from .state import FakeState, load_workspace

__all__ = [
    "DEMO_ACTIVATE_NODE",
    "DEMO_CHANNEL",
    "DEMO_CONTACT_AMINA",
    "DEMO_CONTACT_BRIAN",
    "DEMO_CONTACT_CHLOE",
    "DEMO_CONTACT_DAVID",
    "DEMO_FLOW_ACTIVATE",
    "DEMO_FLOW_POLL",
    "DEMO_GROUP_ADULTS",
    "DEMO_GROUP_BOT",
    "DEMO_GROUP_UREPORTERS",
    "DEMO_LABEL",
    "DEMO_POLL_QUESTION_NODE",
    "DEMO_POLL_WAIT_NODE",
    "DEMO_TOKEN",
    "DEMO_WORKSPACE",
    "FakeState",
    "create_app",
    "demo_seed",
    "load_workspace",
]
