"""Optional dependencies: the backends of the distributed mode come with ``shardrag[cluster]``.

An embedded user installs neither psycopg, redis-py nor boto3; a process configured to use one
of those backends without the extra stops with a message naming it, before it does anything.
"""

from __future__ import annotations

import importlib

from shardrag.errors import InvalidParameter


def require_extra(module: str, extra: str, feature: str) -> None:
    """Import ``module`` or refuse with the ``pip install`` that brings it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise InvalidParameter(
            f"{feature} needs the optional extra shardrag[{extra}] "
            f"(pip install 'shardrag[{extra}]'): {exc}",
            extra=extra,
            module=module,
        ) from exc
