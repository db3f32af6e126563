"""Stopping a listening socket without cutting a connection.

Closing a listening socket resets the connections still waiting in its backlog: their senders
already sent a request, and get a reset instead of an answer. A server that stops should take
those first, but new ones keep arriving between its last accept and its close. On Linux,
``stop_listening`` closes that gap: from then on the socket drops every new connection attempt
(the sender retries it a second later and, the socket closed by then, is refused), so the
backlog can be emptied for good before the close.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys

SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # one classic BPF instruction: "return 0"


def stop_listening(sock: socket.socket) -> bool:
    """Drop new connection attempts to ``sock`` (already queued ones stay acceptable).
    False where unsupported: then only the usual short gap remains."""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("@HP", 1, ctypes.addressof(program))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True
