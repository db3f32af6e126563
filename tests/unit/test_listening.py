"""stop_listening: queued connections stay acceptable, new ones no longer join the backlog."""

from __future__ import annotations

import socket
import sys

import pytest

from shared.listening import stop_listening

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_a_stopped_socket_keeps_its_backlog_and_takes_nothing_new():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=2) as queued:
            assert stop_listening(listener)
            with socket.socket() as late:
                late.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    late.connect(address)  # its SYN is dropped: not queued, not reset
            accepted, peer = listener.accept()
            with accepted:
                assert peer == queued.getsockname()
                queued.sendall(b"ping")
                assert accepted.recv(4) == b"ping"  # the connection was not cut
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()  # the backlog is empty for good
