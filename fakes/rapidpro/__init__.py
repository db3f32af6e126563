"""A contract fake of the RapidPro API v2 (in memory, Flask).

Run it with ``python -m fakes.rapidpro --port 8001 --seed demo``.

See :mod:`fakes.rapidpro.app` for the API and control endpoints and
:mod:`fakes.rapidpro.webhooks` for the webhook body shapes.
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
