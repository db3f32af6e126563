"""End-to-end fixtures: every process of the product, started as a separate OS process."""

from __future__ import annotations

import pytest

from services.stack import Stack, free_base_port


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
