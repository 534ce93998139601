"""TLS: ``shardrag serve`` over HTTPS with mutual TLS, and NATS connections with client
certificates, using the certificates ``tls.CertificateAuthority`` makes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shardrag.client import ShardragClient
from shardrag.errors import ShardragError, Unavailable
from shardrag.natsconn import NatsConnection
from shardrag.tls import CertificateAuthority, IssuedCertificate, tls_context
from tests.support import free_port, require

ROOT_KEY = "root-key-of-the-tls-suite-0123456789"
NATS_SERVER = "/usr/sbin/nats-server"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return {"ca": ca, "server": ca.issue("server"), "client": ca.issue("client")}


@pytest.fixture(scope="module")
def https_server(pki: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``shardrag serve`` over HTTPS requiring client certificates (a real process)."""
    ca: CertificateAuthority = pki["ca"]  # type: ignore[assignment]
    server: IssuedCertificate = pki["server"]  # type: ignore[assignment]
    client: IssuedCertificate = pki["client"]  # type: ignore[assignment]
    port = free_port()
    data = tmp_path_factory.mktemp("https") / "data"
    env = {**os.environ, "SHARDRAG_ADMIN_KEY": ROOT_KEY, "SHARDRAG_RATE_LIMIT_PER_SECOND": "0"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardrag",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--tls-cert",
            str(server.cert),
            "--tls-key",
            str(server.key),
            "--tls-client-ca",
            str(ca.cert_path),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"https://127.0.0.1:{port}"
    context = tls_context(str(ca.cert_path), (str(client.cert), str(client.key)))
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=context, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_serve_answers_https_with_client_certificates_only(
    https_server: str, pki: dict[str, object]
) -> None:
    ca: CertificateAuthority = pki["ca"]  # type: ignore[assignment]
    client: IssuedCertificate = pki["client"]  # type: ignore[assignment]
    with ShardragClient(
        https_server,
        ROOT_KEY,
        ca_file=str(ca.cert_path),
        client_cert=str(client.cert),
        client_key=str(client.key),
    ) as admin:
        assert admin.cluster_status().layout.shards >= 1
    # No client certificate: the TLS handshake is refused, nothing reaches the api.
    with (
        ShardragClient(https_server, ROOT_KEY, ca_file=str(ca.cert_path)) as anonymous,
        pytest.raises(Unavailable),
    ):
        anonymous.cluster_status()
    # Plain HTTP on the same port: refused too.
    plain = https_server.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/healthz", timeout=5).raise_for_status()
    # A server certificate from another CA is not trusted by the client.
    other = CertificateAuthority(Path(str(ca.cert_path)).parent / "other")
    with (
        ShardragClient(https_server, ROOT_KEY, ca_file=str(other.cert_path)) as wrong,
        pytest.raises(ShardragError),
    ):
        wrong.cluster_status()


def test_nats_refuses_a_client_without_a_certificate(
    pki: dict[str, object], tmp_path: Path
) -> None:
    require(Path(NATS_SERVER).exists(), f"{NATS_SERVER} (Debian package nats-server)")
    ca: CertificateAuthority = pki["ca"]  # type: ignore[assignment]
    server: IssuedCertificate = pki["server"]  # type: ignore[assignment]
    client: IssuedCertificate = pki["client"]  # type: ignore[assignment]
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f'port: {port}\nhost: "127.0.0.1"\n'
        f'tls {{\n  cert_file: "{server.cert}"\n  key_file: "{server.key}"\n'
        f'  ca_file: "{ca.cert_path}"\n  verify: true\n  timeout: 2\n}}\n'
    )
    process = subprocess.Popen(
        [NATS_SERVER, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"tls://127.0.0.1:{port}"
        time.sleep(0.5)
        trusted = tls_context(str(ca.cert_path), (str(client.cert), str(client.key)))
        conn = NatsConnection(url, timeout=5, name="tls-test", tls=trusted)
        try:
            assert conn.client.is_connected
        finally:
            conn.close()
        with pytest.raises(Exception):  # noqa: B017 (nats-py raises several kinds)
            NatsConnection(url, timeout=2, name="tls-test", tls=tls_context(str(ca.cert_path)))
    finally:
        process.terminate()
        process.wait(timeout=10)
