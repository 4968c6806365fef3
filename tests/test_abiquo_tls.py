"""TLS to the Abiquo API is verified unless the site config turns it off."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from rehost.abiquo.client import AbiquoClient
from rehost.abiquo.errors import AbiquoError

DATACENTERS = {"links": [], "totalSize": 1,
               "collection": [{"id": 1, "name": "lab", "links": []}]}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(DATACENTERS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.abiquo.datacenters+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/api", cert
    server.shutdown()
    server.server_close()


def test_a_self_signed_certificate_is_refused_by_default(https_server: tuple[str, Path]) -> None:
    url, _ = https_server
    client = AbiquoClient(url, "admin", "secret", retries=1)
    with pytest.raises(AbiquoError) as err:
        client.datacenters()
    assert "certificate verify failed" in str(err.value).lower()


def test_verification_can_be_turned_off_or_given_a_ca(https_server: tuple[str, Path]) -> None:
    url, cert = https_server
    with pytest.warns(InsecureRequestWarning):  # urllib3 says so on every unverified request
        names = [d.name for d in AbiquoClient(url, "admin", "s", verify_tls=False).datacenters()]
    assert names == ["lab"]
    assert [d.name for d in AbiquoClient(url, "admin", "s", verify_tls=str(cert)).datacenters()] \
        == ["lab"]
