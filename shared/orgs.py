"""What an org key looks like: the ``<org>`` of the webhook URL, the key every service files an
org's rows under. Pure, no I/O."""

from __future__ import annotations

import re

ORG_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ORG_KEY_RULE = "an org key is 1-64 lowercase letters, digits, '-' or '_'"


def is_org_key(key: str) -> bool:
    return ORG_KEY.match(key) is not None
