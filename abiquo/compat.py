"""The compatibility table of the manual procedure: which CentOS release and AIM version the
new hosts need for each Abiquo version."""

from __future__ import annotations

from rehost.core.model import Finding, HostFacts

#: Abiquo version -> (CentOS versions a target host may run, the AIM version it needs).
COMPATIBILITY: dict[str, tuple[tuple[str, ...], str]] = {
    "2.4": (("6.3",), "1.5.3"),
    "2.6": (("6.3", "6.4"), "2.1.4"),
}


def check_compatibility(abiquo: str, target: HostFacts, aim: str | None) -> list[Finding]:
    out: list[Finding] = []
    allowed, aim_needed = COMPATIBILITY[abiquo]
    version = target.centos_version or ""
    minor = ".".join(version.split(".")[:2])
    if target.centos_major != 6 or minor not in allowed:
        note = " (6.4 needs Abiquo 2.6: move to 6.3 now, or upgrade first)" \
            if abiquo == "2.4" and minor == "6.4" else ""
        out.append(Finding("critical", "compatibility",
                           f"Abiquo {abiquo} supports CentOS {' or '.join(allowed)}.x on the "
                           f"new hosts, this one runs {target.os_release}{note}",
                           host=target.hostname))
    if aim is None:
        out.append(Finding("info", "aim-version",
                           f"Abiquo {abiquo} needs AIM {aim_needed} on the CentOS 6 hosts "
                           "(set abiquo.aim_version to have it checked)"))
    elif aim != aim_needed:
        out.append(Finding("critical", "aim-version",
                           f"Abiquo {abiquo} needs AIM {aim_needed}, the config says {aim}"))
    return out
