"""The README's demo, as a newcomer runs it: `upartners run` (one process: the four services on
SQLite and the embedded bus, plus the contract fake of the flow engine), then the requests of
"The two commands" — webhook, labelled inbox message, case, contact out of Bot — a restart in
the middle, and the close that puts the contact back and starts the follow-up flow.

No servers needed; it starts a real process and stops it by its pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from fakes.rapidpro.seed import DEMO_CONTACT_AMINA, DEMO_FLOW_ACTIVATE, DEMO_TOKEN

REPO = Path(__file__).resolve().parents[2]
WEBHOOK = REPO / "docs" / "demo" / "webhook.json"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def eventually(probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Demo:
    """`upartners run` in a data folder of its own, started and stopped by pid."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.log = tmp_path / "run.log"
        self.port, self.engine_port = free_ports(2)
        self.site = f"http://127.0.0.1:{self.port}"
        self.engine = f"http://127.0.0.1:{self.engine_port}"

    @contextmanager
    def running(self) -> Iterator[str]:
        """Start, yield what this start printed on stdout, stop with SIGTERM (exit status 0)."""
        env = {
            **os.environ,
            "UPARTNERS_DATA_DIR": str(self.data),
            "UPARTNERS_RELAY_IDLE": "0.01",
            "UPARTNERS_LOG_FORMAT": "text",
        }
        env.pop("UPARTNERS_DATABASE_URL", None)
        env.pop("UPARTNERS_BROKER_URL", None)
        stdout = self.log.with_suffix(f".{time.monotonic_ns()}.out")
        command = [sys.executable, "-m", "services.cli", "run", "--port", str(self.port)]
        command += ["--engine-port", str(self.engine_port)]
        with stdout.open("w") as out, self.log.open("a") as err:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=REPO)
        try:
            eventually(lambda: self._alive(process), "upartners run to answer", timeout=30)
            yield stdout.read_text()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0  # a clean stop
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def _alive(self, process: subprocess.Popen) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"upartners run exited:\n{self.log.read_text()}")
        try:
            return requests.get(f"{self.site}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False


def exported(output: str) -> dict[str, str]:
    """The `export NAME=value` lines the first start prints."""
    return dict(re.findall(r"^\s*export (\w+)=(\S+)", output, flags=re.MULTILINE))


class Newcomer:
    """The README's curl commands, with requests."""

    def __init__(self, demo: Demo, values: dict[str, str]) -> None:
        self.demo, self.values = demo, values
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {values['TOKEN']}"

    def post_webhook(self) -> str:
        answer = requests.post(
            f"{self.demo.site}/webhooks/demo/flow",
            headers={
                "Authorization": f"Token {self.values['SECRET']}",
                "Content-Type": "application/json",
            },
            data=WEBHOOK.read_bytes(),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["message"]

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        answer = self.api.request(method, f"{self.demo.site}/api/v1{path}", json=body, timeout=10)
        assert answer.status_code == expect, (method, path, answer.text)
        return answer.json()

    def inbox(self) -> list[dict]:
        return self.call("GET", "/messages?folder=inbox")["items"]

    def engine(self, endpoint: str, **query: str) -> list[dict]:
        answer = requests.get(
            f"{self.demo.engine}/api/v2/{endpoint}.json",
            params=query,
            headers={"Authorization": f"Token {DEMO_TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["results"]

    def in_bot(self) -> bool:
        [contact] = self.engine("contacts", uuid=DEMO_CONTACT_AMINA)
        return "Bot" in {group["name"] for group in contact["groups"]}


def test_the_readme_demo_from_webhook_to_closed_case_across_a_restart(tmp_path):
    demo = Demo(tmp_path)
    with demo.running() as output:
        values = exported(output)
        assert set(values) == {"SECRET", "TOKEN", "PARTNER", "ADMIN_SIGN_IN", "AGENT_SIGN_IN"}
        sign_in_page = requests.get(f"{demo.site}{values['AGENT_SIGN_IN']}", timeout=10)
        assert sign_in_page.status_code == 200 and "Demo agent" in sign_in_page.text
        newcomer = Newcomer(demo, values)
        assert newcomer.in_bot()

        message_id = newcomer.post_webhook()
        [message] = eventually(
            lambda: [m for m in newcomer.inbox() if m["id"] == message_id and m["labels"]],
            "the labelled message in the inbox",
        )
        assert {label["name"] for label in message["labels"]} == {"Needs help", "Poll answers"}
        assert "Amina" not in str(message) and "+256" not in str(message)  # anonymous

        case = newcomer.call(
            "POST",
            "/cases",
            {"message": message_id, "partner": values["PARTNER"], "summary": "Bullied at school"},
            expect=201,
        )
        eventually(lambda: not newcomer.in_bot(), "the contact to leave Bot")

    with demo.running() as output:
        assert "export" not in output  # nothing seeded again, no new secret or token
        assert newcomer.post_webhook() == message_id  # the same delivery, recognised
        assert newcomer.call("GET", f"/messages/{message_id}")["case"] == case["id"]
        assert newcomer.call("GET", f"/cases/{case['id']}")["state"] == "open"
        assert not newcomer.in_bot()  # the fake kept its state too

        newcomer.call("POST", f"/cases/{case['id']}/close", {"note": "Referred to a counsellor"})
        eventually(newcomer.in_bot, "the contact back in Bot")
        [start] = eventually(lambda: newcomer.engine("flow_starts"), "the follow-up flow")
        assert start["flow"]["uuid"] == DEMO_FLOW_ACTIVATE
        assert start["params"]["case"]["id"] == case["id"]
