"""The baseline of bench/ingest.py: a Flask endpoint that reads the body and answers, no more."""

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/<org>/flow")
    def accept(org: str):
        request.get_data()
        return jsonify({"status": "accepted", "message": "0"})

    return app
