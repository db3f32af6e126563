"""The demo org of ``upartners run``, set up on the first start so that a newcomer can try the
whole product with curl at once (README, "The two commands").

Everything goes through the services' own handler functions, exactly as an operator's commands
and an administrator's API calls would: ingest's webhook secret, the cases bootstrap (org and
administrator), a partner, two labels the demo webhook (docs/demo/webhook.json) hits, and, when
the contract fake of the flow engine runs alongside, flowbridge's connection to it and the org
settings that use its "Bot" group and "Activate chat" flow. The events these write reach the
other services through the bus like any others.

"First start" means: the cases service has no administrator for the org yet. A later start
changes nothing and shows nothing, so the secrets printed once stay the only copies. The fake's
identifiers are fixed (fakes.rapidpro.seed.DEMO_*), so the settings stay valid across restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fakes.rapidpro.seed import (
    DEMO_FLOW_ACTIVATE,
    DEMO_FLOW_POLL,
    DEMO_GROUP_BOT,
    DEMO_POLL_WAIT_NODE,
    DEMO_TOKEN,
)
from services.cases import handlers as cases
from services.cases.domain import Conflict
from services.flowbridge import handlers as flowbridge
from services.flowbridge.handlers import MakeClient
from services.ingest import handlers as ingest
from shared.uow import ServiceStore

ORG = "demo"
ORG_NAME = "Demo helpline"
ADMIN_EMAIL = "admin@demo.example"
ADMIN_NAME = "Demo administrator"
PARTNER = {"name": "Counsellors", "description": "Answers the demo's messages."}
AGENT = {"name": "Demo agent", "email": "agent@demo.example", "role": "agent"}
LABELS: tuple[dict[str, Any], ...] = (
    {
        "name": "Needs help",
        "description": "The contact asks for help or reports abuse.",
        "rule": [{"type": "keywords", "quantifier": "any", "keywords": ["help", "abuse"]}],
    },
    {
        "name": "Poll answers",
        "description": "Answers to the U-Report poll's question (its wait step).",
        "rule": [
            {"type": "step", "steps": [{"flow": DEMO_FLOW_POLL, "node": DEMO_POLL_WAIT_NODE}]}
        ],
    },
)
ENGINE_SETTINGS = {"suspend_groups": [DEMO_GROUP_BOT], "followup_flow": DEMO_FLOW_ACTIVATE}

# (shell variable, value, what it is): how the caller shows what the first start created.
Show = Callable[[str, str, str], None]


def seed(
    stores: Mapping[str, ServiceStore],
    *,
    engine_url: str | None,
    make_client: MakeClient,
    show: Show,
) -> bool:
    """Set up the demo org unless a previous start did; True if this start did it.

    ``show`` gets each credential as soon as it exists (so a failure of a later step cannot
    lose a secret that is shown only once). Without ``engine_url`` the org gets no flow engine:
    connect a real one with ``upartners flowbridge connect`` and pick its groups in the API.
    """
    if not ingest.list_secrets(stores["ingest"], ORG):
        _, secret = ingest.add_secret(stores["ingest"], ORG)
        show("SECRET", secret, f"webhook secret of the org {ORG!r}, shown once")
    try:
        _, token = cases.bootstrap_org(
            stores["cases"], org=ORG, name=ORG_NAME, admin_email=ADMIN_EMAIL, admin_name=ADMIN_NAME
        )
    except Conflict:
        return False  # seeded by an earlier start
    show("TOKEN", token, f"API token of the administrator {ADMIN_EMAIL}, shown once")
    admin = cases.authenticate(stores["cases"], token)
    assert admin is not None  # the token bootstrap just created
    partner = cases.create_partner(stores["cases"], admin, {**PARTNER, "labels": []})
    show("PARTNER", partner.id, f"the partner {PARTNER['name']!r}, to assign cases to")
    agent = cases.create_user(stores["cases"], admin, {**AGENT, "partner": partner.id})
    for who, user_id, email in (
        ("ADMIN", admin.user_id, ADMIN_EMAIL),
        ("AGENT", agent.id, AGENT["email"]),
    ):
        link = cases.make_sign_in_link(stores["cases"], admin, user_id)
        show(
            f"{who}_SIGN_IN",
            f"/set-password/{link.token}",
            f"open it on this server: {email} chooses a password (once, within 3 days)",
        )
    for label in LABELS:
        cases.create_label(stores["cases"], admin, label)
    if engine_url is not None:
        flowbridge.connect_org(stores["flowbridge"], ORG, engine_url, DEMO_TOKEN, make_client)
        cases.update_org(stores["cases"], admin, ENGINE_SETTINGS)
    return True
