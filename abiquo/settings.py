"""The abiquo plugin's settings: the ``[abiquo]`` table of the site config::

    [abiquo]
    url = "https://abiquo.example.com/api"
    user = "admin"
    password_file = "/etc/rehost/abiquo.password"   # or password_env = "ABIQUO_PASSWORD"
    version = "2.6"                        # 2.4 or 2.6
    media = "auto"                         # auto (2.4: XML, 2.6: JSON), xml or json
    verify_tls = true                      # false: no TLS verification (not advised)
    ca_file = "/etc/rehost/abiquo-ca.pem"  # optional: the CA that signed Abiquo's certificate
    timeout = 30                           # seconds per API request
    aim_version = "2.1.4"
    discover = false                       # true: the hosts come from Abiquo, not [hosts.NAME]
    captured = "refuse"                    # VMs Abiquo captured (imported): refused by preflight

The password itself is never in the config: it is read from its file or environment variable
when needed (:meth:`AbiquoSettings.password`), and never kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rehost.core.errors import ConfigError
from rehost.core.types import PluginSettings


class AbiquoSettings(BaseModel):
    # strict: TOML values are typed; "false" is not false
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str
    user: str
    password_file: str | None = None
    password_env: str | None = None
    version: Literal["2.4", "2.6"] = "2.6"
    #: the format asked of the API: XML for 2.4 (JSON there is unconfirmed), JSON for 2.6
    media: Literal["auto", "xml", "json"] = "auto"
    verify_tls: bool = True
    ca_file: str | None = None
    # an API call that takes an hour is a hung server, and a huge value overflows the socket's
    timeout: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    aim_version: str | None = None
    discover: bool = False
    #: what to do with a captured (imported) VM: "refuse" (the only choice built; see
    #: docs/abiquo-api.md for why, and for the path an opt-in would take)
    captured: Literal["refuse"] = "refuse"

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        # before the unknown-key check: say why, not just that the key is unknown
        if isinstance(data, dict) and "password" in data:
            raise ValueError("abiquo.password: put the password in a file (password_file) or "
                             "an environment variable (password_env), not in the config")
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with https:// (or http://), not {value!r}")
        return value.rstrip("/")

    @field_validator("password_file", "ca_file")
    @classmethod
    def _relative_to_the_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        base = (info.context or {}).get("base_dir")
        folder = Path(base) if base is not None else Path.cwd()
        return str((folder / os.path.expanduser(value)).resolve())

    @model_validator(mode="after")
    def _a_way_to_the_password(self) -> AbiquoSettings:
        if not (self.password_file or self.password_env):
            raise ValueError("set password_file or password_env")
        return self

    def password(self) -> str:
        """The password, read when needed and never stored in the settings."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"abiquo.password_env: environment variable "
                                  f"{self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"abiquo.password_file: cannot read "
                                  f"{self.password_file!r}: {exc.strerror}") from exc
        raise ConfigError("abiquo: set password_file or password_env")


def _secrets(settings: AbiquoSettings) -> list[str]:
    # the report redacts what this lists; a password it cannot read is no error here (the
    # campaign says so where it needs it), and an empty one would redact every character
    try:
        password = settings.password()
    except ConfigError:
        return []
    return [password] if password else []


SETTINGS = PluginSettings("abiquo", AbiquoSettings, section="abiquo", help="the Abiquo API",
                          secrets=_secrets)
