"""The cases web process: ``create_app`` is its composition root (gunicorn calls it)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.cases import api
from services.cases.handlers import counts
from services.cases.models import open_store
from services.cases.ui import (
    admin_pages,
    answer_picker,
    case_pages,
    export_pages,
    pages,
    people_pages,
    stats_pages,
)
from shared.http import BodyLimitedRequest, instrument, register_error_handlers
from shared.settings import Settings
from shared.uow import ServiceStore

MAX_BODY = 1024 * 1024  # the largest request body: a bulk action on 500 messages fits easily


def create_app(settings: Settings | None = None, store: ServiceStore | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.request_class = BodyLimitedRequest  # 413 over the limit, chunked bodies included
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["UPARTNERS_SETTINGS"] = settings
    app.json.sort_keys = False  # keep the views' field order: id first
    app.extensions["upartners.store"] = store or open_store(settings)
    counts.keep_counts()  # the folder counts move with the messages the pages and API change
    register_error_handlers(app)
    instrument(app, "cases")
    api.register(app)
    pages.register(app)  # the partner web UI at /
    case_pages.register(app)
    people_pages.register(app)
    admin_pages.register(app)
    answer_picker.register(app)
    stats_pages.register(app)
    export_pages.register(app)
    if settings.proxies:
        # Behind the compose proxy every request comes from nginx: take the client's address
        # from X-Forwarded-For (as many hops as there are trusted proxies), so that sign-in
        # limits count people, not the proxy.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxies, x_proto=settings.proxies
        )
    return app
