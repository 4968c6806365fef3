"""Errors of the Abiquo API client."""

from __future__ import annotations

from rehost.core.errors import ControlPlaneError


class AbiquoError(ControlPlaneError):
    """The Abiquo API refused or failed a request, or an Abiquo task did not succeed.

    ``status`` is the HTTP status (None when no answer came back, e.g. a time limit),
    ``code`` and ``message`` are Abiquo's own (``{"collection": [{"code", "message"}]}``),
    ``url`` the resource concerned (never with credentials).
    """

    def __init__(self, status: int | None, code: str, message: str, url: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.url = url
        where = f" ({url})" if url else ""
        shown = f"HTTP {status} " if status is not None else ""
        super().__init__(f"Abiquo {shown}{code}: {message}{where}")
