"""The HTTP API (FastAPI): auth, routes, errors, and the web console."""

from shardrag.api.app import create_app

__all__ = ["create_app"]
