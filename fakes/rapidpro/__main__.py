"""Serve the contract fake of the RapidPro API v2 as its own process.

    python -m fakes.rapidpro --host 127.0.0.1 --port 8001 [--seed demo] [--page-size N]
                             [--state FILE]

``--port 0`` picks a free port; the first line printed on stdout carries the base URL. SIGTERM and
SIGINT stop the server cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from werkzeug.serving import make_server

from .app import create_app
from .seed import SEEDS
from .state import DEFAULT_PAGE_SIZE


def build_parser() -> argparse.ArgumentParser:
    """The fake's command line (apart from main so that docker-compose.yml's test can check it)."""
    parser = argparse.ArgumentParser(
        prog="python -m fakes.rapidpro",
        description="Contract fake of the RapidPro API v2 (in memory; runs no flows).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--seed", choices=sorted(SEEDS), help="load a seeded workspace")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    parser.add_argument(
        "--state", type=Path, help="keep the workspaces in this JSON file (read back at start)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    app = create_app(seed=args.seed, page_size=args.page_size, state_file=args.state)
    server = make_server(args.host, args.port, app, threaded=True)
    base_url = f"http://{args.host}:{server.server_port}"
    print(f"RapidPro API v2 contract fake listening on {base_url}", flush=True)
    if args.seed:
        seeded = SEEDS[args.seed]()
        print(f"seeded workspace {seeded['name']!r}, API token {seeded['token']!r}", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="rapidpro-fake"
    )
    thread.daemon = True
    thread.start()
    while not stop.wait(0.2):
        if not thread.is_alive():  # the server died on its own
            return 1
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
