"""The emulator's HTTP layer: authentication, media types, paging and error bodies
(ABIQUO-API.md) around :class:`~rehost.lab.emulator.api.Api`.

Only JSON is served (``application/vnd.abiquo.<entity>+json; version=X.Y``). An ``Accept``
asking for XML or for a version other than 2.4 or 2.6 is answered ``406``; a body sent with a
media type that is not JSON ``415``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from loguru import logger

from rehost.lab.emulator.api import Api
from rehost.lab.emulator.inventory import MEDIA
from rehost.lab.emulator.service import ApiError, Emulator

VERSIONS = ("2.4", "2.6")
DEFAULT_VERSION = "2.6"
DEFAULT_LIMIT = 25


def _version(media: str) -> str | None:
    for part in media.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip() == "version":
            return value.strip()
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body in one segment: no Nagle + delayed-ACK stall on keep-alive connections
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:  # the base's name
        logger.debug("emulator: {} {}", self.address_string(), format % args)

    def do_GET(self) -> None:  # http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        version = DEFAULT_VERSION
        try:
            raw = self._read_body()
            self._authenticate()
            body = self._parse_body(raw)
            version = self._negotiate()
            parts = urlsplit(self.path)
            if not parts.path.startswith("/api/"):
                raise ApiError(404, "404-NOT FOUND", "The requested resource does not exist")
            query = parse_qs(parts.query)
            status, entity, data = self.server.api.handle(method, parts.path[5:].strip("/"),
                                                          body, query)
            if isinstance(data, list):
                data = self._page(parts.path, query, data)
            self._send(status, entity, data, version)
        except ApiError as exc:
            self._error(exc, version)
        except Exception as exc:  # a bug must still answer with Abiquo's shape
            logger.exception("emulator: {} {} failed", method, self.path)
            self._error(ApiError(500, "500-INTERNAL SERVER ERROR", f"Unexpected exception: "
                                 f"{type(exc).__name__}: {exc}"), version)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse_body(self, raw: bytes) -> Any:
        if not raw:
            return None
        ctype = self.headers.get("Content-Type", "")
        if "json" not in ctype:
            raise ApiError(415, "415-UNSUPPORTED MEDIA TYPE",
                           f"The emulator only reads application/vnd.abiquo.*+json, not {ctype!r}")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "GEN-3", f"Invalid JSON document: {exc}") from exc

    def _authenticate(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        ok = False
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            ok = hmac.compare_digest(user.encode(), self.server.user.encode()) and \
                hmac.compare_digest(password.encode(), self.server.password.encode())
        if not ok:
            raise ApiError(401, "401-UNAUTHORIZED", "This request requires user authentication "
                           "(invalid credentials)" if header else
                           "This request requires user authentication")

    def _negotiate(self) -> str:
        accept = self.headers.get("Accept", "") or "*/*"
        for media in accept.split(","):
            media = media.strip()
            if media.startswith("application/vnd.abiquo."):
                if "+xml" in media.split(";")[0]:
                    raise ApiError(406, "406-NOT ACCEPTABLE", "The emulator serves JSON only")
                version = _version(media) or DEFAULT_VERSION
                if version not in VERSIONS:
                    raise ApiError(406, "406-NOT ACCEPTABLE", f"Unsupported version {version}: "
                                   f"choose one of {', '.join(VERSIONS)}")
                return version
        return DEFAULT_VERSION

    def _page(self, path: str, query: dict[str, list[str]], items: list[Any]) -> dict[str, Any]:
        try:
            start = max(0, int(query.get("startwith", ["0"])[0]))
            limit = max(1, int(query.get("limit", [str(DEFAULT_LIMIT)])[0]))
        except ValueError as exc:
            raise ApiError(400, "QUERY-0", "Invalid paging parameter") from exc
        base = self.server.base_url + path[4:]

        def link(rel: str, at: int) -> dict[str, str]:
            return {"rel": rel, "href": f"{base}?{urlencode({'startwith': at, 'limit': limit})}",
                    "type": "", "title": ""}

        last = max(0, (len(items) - 1) // limit * limit)
        links = [link("first", 0), link("last", last)]
        if start + limit < len(items):
            links.append(link("next", start + limit))
        if start > 0:
            links.append(link("prev", max(0, start - limit)))
        return {"links": links, "collection": items[start:start + limit],
                "totalSize": len(items)}

    def _send(self, status: int, entity: str, data: Any, version: str) -> None:
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", MEDIA.format(entity) + f"; version={version}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, exc: ApiError, version: str) -> None:
        body = {"collection": [{"code": exc.code, "message": exc.message}]}
        payload = json.dumps(body).encode()
        self.send_response(exc.status)
        self.send_header("Content-Type", MEDIA.format("errors") + f"; version={version}")
        self.send_header("Content-Length", str(len(payload)))
        if exc.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Abiquo Api"')
        self.end_headers()
        self.wfile.write(payload)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, emu: Emulator, user: str, password: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.emu = emu
        self.user = user
        self.password = password
        self.base_url = f"http://{host}:{self.server_address[1]}/api"
        emu.inv.base = self.base_url
        self.api = Api(emu)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def serve_in_thread(server: EmulatorServer) -> threading.Thread:
    """For tests that run the emulator in-process."""
    t = threading.Thread(target=server.serve_forever, name="abq-http", daemon=True)
    t.start()
    return t
