"""A webhook posted to the ingest process is labelled by the labeler process, through the real
RabbitMQ and PostgreSQL, with each relay in its own process."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from services.ingest import handlers as ingest_handlers
from services.ingest.models import open_store as open_ingest
from services.labeler.models import Message as LabelledMessage
from services.labeler.models import open_store as open_labeler
from shared.bus.publisher import ConfirmingPublisher
from tests.ingest_helpers import ORG, fixture
from tests.labeler_helpers import keywords, label_event

pytestmark = pytest.mark.e2e


def test_a_webhook_becomes_a_labelled_message(make_stack, pg_settings):
    stack = make_stack(("ingest", "labeler"), ("labeler",))
    ingest, labeler = open_ingest(pg_settings), open_labeler(pg_settings)
    try:
        _, secret = ingest_handlers.add_secret(ingest, ORG)
        label = label_event("Bullying", [keywords("bullying")], org=ORG)
        publisher = ConfirmingPublisher(pg_settings)
        publisher.publish([(label.id, label.name, label.body())])
        publisher.close()
        time.sleep(1.0)  # label changes apply to messages received after them

        import requests

        response = requests.post(
            f"{stack.url_of('ingest')}/webhooks/{ORG}/flow",
            data=fixture("upartners_template.json"),
            headers={"Authorization": f"Token {secret}", "User-Agent": "Mailroom/9.3.0"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        message_id = response.json()["message"]
        deadline = time.monotonic() + 30
        labels = None
        while time.monotonic() < deadline and labels is None:
            with labeler.db.session() as session:
                labels = session.scalar(
                    select(LabelledMessage.labels).where(LabelledMessage.id == message_id)
                )
            time.sleep(0.1)
        assert labels == [label.data["label_uuid"]]
        assert stack.dead() == []
    finally:
        ingest.db.dispose()
        labeler.db.dispose()
