"""gunicorn's threaded worker and a server hook, so that a SIGTERM cuts no connection.

gunicorn's ``gthread`` worker, on SIGTERM, leaves its loop at once: connections it had accepted
but not yet read are dropped unanswered, and those still waiting in the listen backlog are
reset when the last process closes the listening socket. The flow engine sees either as a
failed webhook, which it may not send again. Here, on the server's SIGTERM, the master first
makes the listening socket drop new connection attempts (``when_ready`` installs that; a
sender retries a dropped attempt a second later and is refused by then); each worker then hands
every connection it holds and every one waiting in the backlog to its threads, and stops as
gthread does (the threads finish within ``graceful_timeout``).

deploy/gunicorn/*.py select the worker with ``worker_class`` and import ``when_ready``.
"""

from __future__ import annotations

import selectors

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from shared.http import server_error_body
from shared.listening import stop_listening


def when_ready(server) -> None:
    """gunicorn hook, in the master: on SIGTERM (the whole server stops; not on a reload or a
    scale-down, where other workers keep serving the socket), stop listening before the
    workers are told to drain."""
    handle_term = server.handle_term

    def handle_term_gracefully() -> None:
        for listener in server.LISTENERS:
            stop_listening(listener)
        handle_term()

    server.handle_term = handle_term_gracefully


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` in the one JSON error shape instead of an HTML page:
    gunicorn writes it for requests it could not parse (a request line or headers too large)."""
    body = server_error_body(status_int, mesg or reason)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class DrainingThreadWorker(ThreadWorker):
    draining = False

    def init_process(self) -> None:
        # In this worker process only: gunicorn's own error answers as JSON (see above).
        util.write_error = write_json_error
        super().init_process()  # runs the worker's loop until it exits

    def handle_exit(self, sig, frame) -> None:  # noqa: ARG002 (gunicorn's signature)
        # A signal handler may run inside the loop's turn: note it, and drain at the end of the
        # turn (murder_keepalived is its last step), within a second (the poller's timeout).
        self.draining = True

    def murder_keepalived(self) -> None:
        super().murder_keepalived()
        if self.draining and self.alive:
            # First, so that the answers in flight close their connections and none is
            # registered for keep-alive again; then the loop ends after this turn.
            self.alive = False
            self.drain()

    def drain(self) -> None:
        """Queue every connection accepted or waiting to be; close idle keep-alive ones."""
        with self._lock:
            held = [
                key.data.args[0]  # functools.partial(self.on_client_socket_readable, conn)
                for key in list(self.poller.get_map().values())
                if key.fileobj not in self.sockets
            ]
            for conn in held:
                self.poller.unregister(conn.sock)
                if conn.initialized and conn in self._keep:
                    self._keep.remove(conn)
        for conn in held:
            if conn.initialized and not _readable(conn.sock):
                # between two requests: closing it is HTTP's ordinary end of a keep-alive
                self.nr_conns -= 1
                conn.close()
            else:
                self.enqueue_req(conn)
        for listener in self.sockets:
            server = listener.getsockname()
            while True:
                try:
                    sock, client = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    break
                self.nr_conns += 1
                self.enqueue_req(TConn(self.cfg, sock, client, server))


def _readable(sock) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))
