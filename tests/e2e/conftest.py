"""End-to-end fixtures: every process of the product, started as a separate OS process."""

from __future__ import annotations

import socket

import pytest

from services.stack import PORTS, Stack


def free_base_port() -> int:
    """A base port with every port a stack uses after it (services/stack.py) free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + PORTS < 65000 and all(_free(base + i) for i in range(PORTS)):
            return base
    raise RuntimeError(f"no {PORTS} free ports in a row")


def _free(port: int) -> bool:
    # The ops servers listen on every interface: check the port there.
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@pytest.fixture
def make_stack(pg_settings, tmp_path):
    """Start a stack of the given services; stopped (by process id) after the test."""
    stacks: list[Stack] = []

    def make(services, workers, *, with_fake=False, extra_env=None) -> Stack:
        stack = Stack(
            pg_settings,
            services,
            workers,
            base_port=free_base_port(),
            with_fake=with_fake,
            log_dir=tmp_path / "logs",
            extra_env=dict(extra_env or {}),
        )
        stacks.append(stack)
        stack.start()
        return stack

    yield make
    for stack in stacks:
        stack.stop()
