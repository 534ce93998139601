"""Running the app under uvicorn until SIGINT or SIGTERM, then returning (not dying)."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI


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


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until stopped."""
    GracefulServer(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
