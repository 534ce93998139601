"""Running the app under uvicorn until SIGINT or SIGTERM, then returning (not dying)."""

from __future__ import annotations

import signal
import socket
import ssl
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from shardrag.config import Settings


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose ``run`` returns after a stop signal.

    Plain uvicorn re-raises the signal once it has shut down, which kills the process
    before the caller can close the data dir (stop the pipeline's workers, flush the shards).
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: stop gracefully; a second SIGINT: stop now."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` on the settings' host and port until stopped; HTTPS only with
    ``tls_cert``, requiring client certificates signed by ``tls_client_ca`` if set.

    ``reuse_port``: bind with SO_REUSEPORT, so several api processes listen on one port and
    the kernel spreads new connections over them (``shardrag cluster up`` runs two).
    """
    host, port = settings.host, settings.port
    tls: dict[str, Any] = {}
    if settings.tls_cert:
        tls = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
        if settings.tls_client_ca:
            tls |= {"ssl_ca_certs": settings.tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    # log_config=None: uvicorn's own lines go through the process's JSON handler.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", log_config=None, access_log=False, **tls
    )
    server = GracefulServer(config)
    if not settings.reuse_port:
        server.run()
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
