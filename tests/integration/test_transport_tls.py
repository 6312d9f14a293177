"""tls+tcp:// with certificates made by the openssl CLI for each test session."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from omega.errors import RequestTimeout, TransportError
from omega.transport import RpcClient, RpcServer, TlsSettings, TransportSettings

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

BASE = TransportSettings(workers=2, retries=0, request_timeout_s=5.0, send_timeout_s=2.0,
                         reconnect_min_ms=10, reconnect_max_ms=200, close_timeout_s=3.0)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", cwd=d)


def _leaf(d: Path, name: str, ca: str, cn: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(
        f"subjectAltName=DNS:{cn},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _leaf(d, "server", "ca", "localhost")
    _leaf(d, "client", "ca", "tv-1")
    return d


def _server_settings(pki: Path, *, mutual: bool = False) -> TransportSettings:
    return replace(BASE, tls=TlsSettings(cert_file=pki / "server.pem", key_file=pki / "server.key",
                                         ca_file=pki / "ca.pem" if mutual else None))


def _client_settings(pki: Path, ca: str = "ca", *, cert: bool = False) -> TransportSettings:
    return replace(BASE, tls=TlsSettings(
        ca_file=pki / f"{ca}.pem", server_name="localhost",
        cert_file=pki / "client.pem" if cert else None,
        key_file=pki / "client.key" if cert else None))


def test_tls_round_trip(pki: Path) -> None:
    with RpcServer("tls+tcp://127.0.0.1:0", lambda b: b"tls:" + b, _server_settings(pki),
                   lambda e: b"E") as srv:
        assert srv.address.startswith("tls+tcp://127.0.0.1:") and srv.port
        with RpcClient(srv.address, _client_settings(pki)) as c:
            assert c.request(b"hello") == b"tls:hello"
            assert c.request(b"z" * 5000) == b"tls:" + b"z" * 5000


def test_tls_client_rejects_server_from_another_ca(pki: Path) -> None:
    with RpcServer("tls+tcp://127.0.0.1:0", lambda b: b, _server_settings(pki),
                   lambda e: b"E") as srv:
        settings = replace(_client_settings(pki, "other-ca"), send_timeout_s=0.5)
        with RpcClient(srv.address, settings) as c, \
                pytest.raises(TransportError, match="no connection") as info:
            c.request(b"x")
        assert not isinstance(info.value, RequestTimeout)
        assert srv.stats()["requests"] == 0


def test_mutual_tls_requires_a_client_certificate(pki: Path) -> None:
    with RpcServer("tls+tcp://127.0.0.1:0", lambda b: b"ok", _server_settings(pki, mutual=True),
                   lambda e: b"E") as srv:
        with RpcClient(srv.address, _client_settings(pki, cert=True)) as c:
            assert c.request(b"x") == b"ok"
        anonymous = replace(_client_settings(pki), send_timeout_s=0.5)
        with RpcClient(srv.address, anonymous) as c, pytest.raises(TransportError):
            c.request(b"x")
        assert srv.stats()["requests"] == 1


def test_tls_misconfiguration_is_a_clear_error(pki: Path) -> None:
    with pytest.raises(TransportError, match="cert_file"):
        RpcServer("tls+tcp://127.0.0.1:0", lambda b: b, BASE, lambda e: b"E").start()
    with RpcClient("tls+tcp://127.0.0.1:1", BASE) as c, pytest.raises(TransportError,
                                                                     match="ca_file"):
        c.request(b"x")
    missing = replace(BASE, tls=TlsSettings(cert_file=pki / "nope.pem",
                                            key_file=pki / "server.key"))
    with pytest.raises(TransportError, match=r"nope\.pem"):
        RpcServer("tls+tcp://127.0.0.1:0", lambda b: b, missing, lambda e: b"E").start()
