"""Serving the app: a listening socket with a clear error when the port is taken, in the foreground or a thread."""

import ipaddress
import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from kqv.errors import UserError


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or one line saying why not (port taken, address not on this machine)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: a port is 0…65535 (0 = any free one)")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE
            raise UserError(f"port {port} on {host} is in use; pick another with --port (0 = any free one)") from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port") from None
    sock.listen(128)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _server(app):
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))


def serve_forever(app, sock: socket.socket) -> None:
    _server(app).run(sockets=[sock])


@contextmanager
def serving_in_background(app, host: str = "127.0.0.1", port: int = 0):
    """Run the app on a thread for the length of the block; yields its base URL."""
    sock = listen(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
