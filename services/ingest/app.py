"""The ingest web process: ``create_app`` is its composition root (gunicorn calls it)."""

from __future__ import annotations

from flask import Flask

from services.ingest import api, handlers
from services.ingest.models import open_store
from shared.http import BodyLimitedRequest, health_blueprint, instrument, register_error_handlers
from shared.settings import Settings
from shared.uow import ServiceStore


def create_app(settings: Settings | None = None, store: ServiceStore | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.request_class = BodyLimitedRequest  # 413 over the limit, chunked bodies included
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.config["UPARTNERS_SETTINGS"] = settings
    store = store or open_store(settings, pre_ping=False)  # its one statement retries
    app.extensions["upartners.store"] = store
    app.extensions["upartners.secrets"] = handlers.SecretCache(store, settings.secret_cache_ttl)
    register_error_handlers(app)
    instrument(app, "ingest")
    app.register_blueprint(api.bp)
    app.register_blueprint(health_blueprint())
    return app
