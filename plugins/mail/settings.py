"""The ``mail`` plugin's settings: the ``[plugins.mail]`` table of the site config::

    [plugins.mail]
    host = "smtp.example.com"        # no host: no mail is sent (the default)
    port = 587                       # default: 465 with tls = "ssl", else 25
    tls = "starttls"                 # starttls (default), ssl, or none
    verify_tls = true                # false: the server's certificate is not checked
    ca_file = "/etc/rehost/smtp-ca.pem"
    user = "rehost"                  # with password_file or password_env
    password_file = "/etc/rehost/smtp.password"
    sender = "noc@example.com"       # the From address (needed)
    sender_name = "Example NOC"
    reply_to = "noc@example.com"
    owners = "enterprise"            # enterprise, user or none: whom Abiquo names
    vm_owners = { "web-*" = ["web-team@example.com"] }   # instead of Abiquo's, per VM
    extra = ["noc@example.com"]      # also get every mail
    override = []                    # not empty: every mail goes to these instead
    events = ["announced", "downtime_start", "downtime_end", "failed"]
    templates = "/etc/rehost/mail"   # the site's own templates, before the built-in ones
    window = "Saturday 4 May, 22:00-02:00 UTC"
    contact = "noc@example.com, +1 555 0100"
    vars = { site = "Example Cloud" }
    timeout = 20                     # seconds for each SMTP exchange
    retry_after = 60                 # after the server failed, seconds before trying again
    enabled = true

The password is never in the config: it is read from its file or environment variable when a
mail is sent, and never kept in the settings (the reports redact it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rehost.api import ConfigError, PluginSettings

#: the events a mail is sent for, in the order they happen
Event = Literal["announced", "downtime_start", "downtime_end", "failed"]
EVENTS: tuple[Event, ...] = ("announced", "downtime_start", "downtime_end", "failed")

# an address as rehost sends to it: a dot-atom local part and a host name, nothing a header
# or an SMTP command could be bent with (no spaces, quotes, brackets, control characters)
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})*")


def valid_address(value: str) -> bool:
    """Whether ``value`` is a plain e-mail address (``user@example.com``) rehost sends to."""
    return len(value) <= 254 and _ADDRESS.fullmatch(value) is not None


def _check_address(value: str, what: str) -> str:
    if not valid_address(value):
        raise ValueError(f"{what}: {value!r} is not an e-mail address (user@example.com)")
    return value


class MailSettings(BaseModel):
    # strict: TOML values are typed; "false" is not false
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    verify_tls: bool = True
    ca_file: str | None = None
    # an SMTP exchange that takes minutes is a dead server: the VM's move would wait for it
    timeout: float = Field(default=20.0, gt=0, le=300, allow_inf_nan=False)
    user: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    sender: str | None = None
    sender_name: str = "rehost"
    reply_to: str | None = None
    owners: Literal["enterprise", "user", "none"] = "enterprise"
    vm_owners: dict[str, list[str]] = Field(default_factory=dict)
    extra: list[str] = Field(default_factory=list)
    override: list[str] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=lambda: list(EVENTS))
    templates: str | None = None
    window: str = ""
    contact: str = ""
    vars: dict[str, str] = Field(default_factory=dict)
    retry_after: float = Field(default=60.0, ge=0, le=3600, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        # before the unknown-key check: say why, not just that the key is unknown
        if isinstance(data, dict) and "password" in data:
            raise ValueError("plugins.mail.password: put the password in a file "
                             "(password_file) or an environment variable (password_env), not "
                             "in the config")
        return data

    @field_validator("password_file", "ca_file", "templates")
    @classmethod
    def _relative_to_the_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        base = (info.context or {}).get("base_dir")
        folder = Path(base) if base is not None else Path.cwd()
        return str((folder / os.path.expanduser(value)).resolve())

    @field_validator("sender", "reply_to")
    @classmethod
    def _one_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_address(value, str(info.field_name))

    @field_validator("extra", "override")
    @classmethod
    def _addresses(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [_check_address(v, str(info.field_name)) for v in value]

    @field_validator("vm_owners")
    @classmethod
    def _vm_addresses(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k: [_check_address(v, f"vm_owners.{k}") for v in vs] for k, vs in value.items()}

    @field_validator("sender_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must be one line of text")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MailSettings:
        if self.host is not None and not self.host.strip():
            raise ValueError("host: give the SMTP server's name or address (or leave it out)")
        if self.host and not self.sender:
            raise ValueError("set sender, the From address of the mail")
        if self.user and not (self.password_file or self.password_env):
            raise ValueError("user needs password_file or password_env")
        if (self.password_file or self.password_env) and not self.user:
            raise ValueError("a password needs its user")
        if self.user and self.tls == "none":
            raise ValueError("a login needs tls = \"starttls\" or \"ssl\": without TLS the "
                             "password would cross the network in clear")
        return self

    @property
    def active(self) -> bool:
        """Whether mail is sent at all: enabled, with a server to send it to."""
        return self.enabled and bool(self.host)

    @property
    def port_number(self) -> int:
        return self.port or (465 if self.tls == "ssl" else 25)

    def password(self) -> str | None:
        """The SMTP password, read when needed and never stored in the settings (None: no
        login)."""
        if not self.user:
            return None
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"plugins.mail.password_env: environment variable "
                                  f"{self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"plugins.mail.password_file: cannot read "
                                  f"{self.password_file!r}: {exc.strerror}") from exc
        return None


def _secrets(settings: MailSettings) -> list[str]:
    # the reports redact what this lists; an unreadable password is said where it is needed
    try:
        password = settings.password()
    except ConfigError:
        return []
    return [password] if password else []


SETTINGS = PluginSettings("mail", MailSettings, help="mail each VM's owners (SMTP)",
                          secrets=_secrets)
