"""The emulator's HTTP layer: authentication, media types, paging and error bodies
(docs/abiquo-api.md) around :class:`~rehost.lab.emulator.api.Api`.

The version profile decides the formats, as Abiquo's versions do:

- ``2.4``: XML only (``application/vnd.abiquo.<entity>+xml; version=2.4``); an ``Accept``
  asking for JSON is ``406``, a JSON body ``415``;
- ``2.6``: XML by default (no ``Accept``, ``*/*``, ``+xml``), JSON when asked (``+json``);
  bodies in either.

An ``Accept`` or ``Content-Type`` with a version other than the profile's is ``406`` (Abiquo
2.0's VersionCheckerFilter accepts its own version only); one without a version is taken as
the profile's. Errors come as ``application/vnd.abiquo.error+xml`` (or ``+json``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from loguru import logger

from rehost.abiquo import media as codec
from rehost.lab.emulator.api import Api, SeeOther
from rehost.lab.emulator.service import ApiError, Emulator

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

    @property
    def profile(self) -> str:
        return self.server.emu.profile

    def _serve(self, method: str) -> None:
        fmt = "xml"
        try:
            raw = self._read_body()
            self._authenticate()
            fmt = self._negotiate()
            body = self._parse_body(raw)
            parts = urlsplit(self.path)
            if not parts.path.startswith("/api/"):
                raise ApiError(404, "404-NOT FOUND", "The requested resource does not exist")
            query = parse_qs(parts.query)
            try:
                status, entity, data = self.server.api.handle(
                    method, parts.path[5:].strip("/"), body, query)
            finally:
                if method != "GET":  # a change, kept as Abiquo's database keeps it
                    self.server.emu.persist()
            if isinstance(data, list):
                data = self._page(parts.path, query, data)
            self._send(status, entity, data, fmt)
        except SeeOther as see:
            self.send_response(303)
            self.send_header("Location", see.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except ApiError as exc:
            self._error(exc, fmt)
        except Exception as exc:  # a bug must still answer with Abiquo's shape
            logger.exception("emulator: {} {} failed", method, self.path)
            self._error(ApiError(500, "500-INTERNAL SERVER ERROR", f"Unexpected exception: "
                                 f"{type(exc).__name__}: {exc}"), fmt)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse_body(self, raw: bytes) -> Any:
        if not raw:
            return None
        ctype = self.headers.get("Content-Type", "")
        self._check_version(ctype, 415)
        fmt = codec.format_of(ctype)
        if fmt is None or (fmt == "json" and self.profile == "2.4"):
            reads = "+xml" if self.profile == "2.4" else "+xml or +json"
            raise ApiError(415, "415-UNSUPPORTED MEDIA TYPE", f"Abiquo {self.profile} reads "
                           f"application/vnd.abiquo.*{reads}, not {ctype!r}")
        try:
            return codec.decode(raw, ctype, collection=False)
        except codec.MediaError as exc:
            raise ApiError(400, "GEN-3", f"Invalid document: {exc}") from exc

    def _check_version(self, media: str, status: int = 406) -> None:
        version = _version(media)
        if media.startswith(codec.MEDIA_PREFIX) and version not in (None, self.profile):
            raise ApiError(status, f"{status}-NOT ACCEPTABLE" if status == 406 else
                           f"{status}-UNSUPPORTED MEDIA TYPE",
                           f"Unsupported version {version}: this is Abiquo {self.profile}")

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
        """The answer's format: JSON only when asked for (and the profile has it)."""
        accept = (self.headers.get("Accept", "") or "*/*").strip()
        self._check_version(accept)
        if codec.format_of(accept) == "json":
            if self.profile == "2.4":
                raise ApiError(406, "406-NOT ACCEPTABLE", "Abiquo 2.4 serves XML only "
                               "(application/vnd.abiquo.*+xml)")
            return "json"
        return "xml"

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

    def _send(self, status: int, entity: str, data: Any, fmt: str) -> None:
        payload = b"" if data is None else codec.encode(entity, data, fmt)
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", codec.media_type(entity, fmt, self.profile))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, exc: ApiError, fmt: str) -> None:
        body = {"collection": [{"code": exc.code, "message": exc.message}]}
        payload = codec.encode("error", body, fmt)
        self.send_response(exc.status)
        self.send_header("Content-Type", codec.media_type("error", fmt, self.profile))
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
