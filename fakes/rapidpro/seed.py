"""The demo seed of the contract fake: fixed identifiers so configs and docs can refer to them.

:func:`demo_seed` is the ``--seed demo`` workspace; :data:`SEEDS` names the seeds the command line,
``create_app`` and ``/_fake/reset`` accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEMO_WORKSPACE = "demo"
DEMO_TOKEN = "demo-token"
DEMO_CHANNEL = "de5e0006-0000-4000-8000-000000000001"
DEMO_GROUP_BOT = "de5e0001-0000-4000-8000-000000000001"
DEMO_GROUP_UREPORTERS = "de5e0001-0000-4000-8000-000000000002"
DEMO_GROUP_ADULTS = "de5e0001-0000-4000-8000-000000000003"  # smart (query) group
DEMO_CONTACT_AMINA = "de5e0002-0000-4000-8000-000000000001"  # in "Bot"
DEMO_CONTACT_BRIAN = "de5e0002-0000-4000-8000-000000000002"
DEMO_CONTACT_CHLOE = "de5e0002-0000-4000-8000-000000000003"  # telegram
DEMO_CONTACT_DAVID = "de5e0002-0000-4000-8000-000000000004"  # stopped
DEMO_FLOW_POLL = "de5e0003-0000-4000-8000-000000000001"  # "U-Report Poll"
DEMO_FLOW_ACTIVATE = "de5e0003-0000-4000-8000-000000000002"  # "Activate chat" (follow-up)
DEMO_POLL_QUESTION_NODE = "de5e0004-0000-4000-8000-000000000001"
DEMO_POLL_WAIT_NODE = "de5e0004-0000-4000-8000-000000000002"
DEMO_ACTIVATE_NODE = "de5e0004-0000-4000-8000-000000000011"
DEMO_LABEL = "de5e0005-0000-4000-8000-000000000001"  # "Counselling"


def demo_seed() -> dict[str, Any]:
    """The ``--seed demo`` workspace as a spec for :func:`.state.load_workspace` (a fresh copy)."""
    return {
        "name": DEMO_WORKSPACE,
        "token": DEMO_TOKEN,
        "uuid": "de5e0000-0000-4000-8000-000000000001",
        "channel": {"uuid": DEMO_CHANNEL, "name": "Demo SMS", "address": "+256700000000"},
        "groups": [
            {"uuid": DEMO_GROUP_BOT, "name": "Bot"},
            {"uuid": DEMO_GROUP_UREPORTERS, "name": "U-Reporters"},
            {"uuid": DEMO_GROUP_ADULTS, "name": "Adults", "query": "age >= 18"},
        ],
        "flows": [
            {
                "uuid": DEMO_FLOW_POLL,
                "name": "U-Report Poll",
                "nodes": [DEMO_POLL_QUESTION_NODE, DEMO_POLL_WAIT_NODE],
                "wait_node": DEMO_POLL_WAIT_NODE,
            },
            {
                "uuid": DEMO_FLOW_ACTIVATE,
                "name": "Activate chat",
                "nodes": [DEMO_ACTIVATE_NODE],
            },
        ],
        "labels": [{"uuid": DEMO_LABEL, "name": "Counselling"}],
        "contacts": [
            {
                "uuid": DEMO_CONTACT_AMINA,
                "name": "Amina",
                "urns": ["tel:+256700000001"],
                "language": "eng",
                "fields": {"age": "19", "district": "Kampala"},
                "groups": [DEMO_GROUP_BOT, DEMO_GROUP_UREPORTERS, DEMO_GROUP_ADULTS],
            },
            {
                "uuid": DEMO_CONTACT_BRIAN,
                "name": "Brian",
                "urns": ["tel:+256700000002"],
                "language": "eng",
                "fields": {"age": "16", "district": "Gulu"},
                "groups": [DEMO_GROUP_UREPORTERS],
            },
            {
                "uuid": DEMO_CONTACT_CHLOE,
                "name": "Chloe",
                "urns": ["telegram:100200300#chloe"],
                "language": "eng",
                "fields": {"age": "22", "district": "Mbarara"},
                "groups": [DEMO_GROUP_UREPORTERS, DEMO_GROUP_ADULTS],
            },
            {
                "uuid": DEMO_CONTACT_DAVID,
                "name": "David",
                "urns": ["tel:+256700000004"],
                "status": "stopped",
                "fields": {"age": "30"},
                "groups": [DEMO_GROUP_ADULTS],
            },
        ],
    }


SEEDS: dict[str, Callable[[], dict[str, Any]]] = {"demo": demo_seed}
