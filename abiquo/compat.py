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
    elif abiquo == "2.6" and minor == "6.3":
        out.append(Finding("warning", "upgrade-6.4",
                           "CentOS 6.3 target: Abiquo 2.6 wants its hosts upgraded to 6.4, "
                           "and the VMs moved here would be powered off again for that; move "
                           "them to 6.4 hosts (make this host a source: it is emptied too)",
                           host=target.hostname))
    if aim is None:
        out.append(Finding("info", "aim-version",
                           f"Abiquo {abiquo} needs AIM {aim_needed} on the CentOS 6 hosts "
                           "(set abiquo.aim_version to have it checked)"))
    elif aim != aim_needed:
        out.append(Finding("critical", "aim-version",
                           f"Abiquo {abiquo} needs AIM {aim_needed}, the config says {aim}"))
    return out


def minor_release(facts: HostFacts) -> str:
    """``6.3`` for CentOS 6.3.x, "" when unknown."""
    return ".".join((facts.centos_version or "").split(".")[:2])


def upgrade_source(abiquo: str, facts: HostFacts) -> bool:
    """A CentOS 6 host that is a source all the same: with Abiquo 2.6 the manual procedure
    upgrades CentOS 6.3 hosts to 6.4, each with a power-off of its VMs; moving the VMs to the
    6.4 hosts instead costs them one power-off, not two."""
    return abiquo == "2.6" and facts.centos_major == 6 and minor_release(facts) == "6.3"


def target_release(abiquo: str, facts: HostFacts) -> str | None:
    """None when a host running this release may take VMs as a target of a campaign for
    this Abiquo version, else why not (an emptied host rejoining an evacuation)."""
    allowed, _ = COMPATIBILITY[abiquo]
    if abiquo == "2.6":
        allowed = ("6.4",)  # 6.3 runs 2.6 but is upgraded to 6.4 (another power-off)
    if facts.centos_major != 6 or minor_release(facts) not in allowed:
        return (f"Abiquo {abiquo} wants CentOS {' or '.join(allowed)}.x on its new hosts; "
                f"this one runs {facts.os_release}")
    return None
