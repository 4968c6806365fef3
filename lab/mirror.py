"""``rehost lab mirror``: a lab description shaped like a real site, to rehearse its campaign.

It reads the site through a dry-run campaign of its site config, in a temporary state folder
(the site's own journal and state folder are not opened), and only reads:

- each host's facts (``ctx.facts``: libvirt's node info, one ssh command that prints
  ``/etc/redhat-release`` and ``df`` of the datastore) and, on an Abiquo site, its machine
  (``rehost_host_capacity``: a GET);
- the VMs the control plane selects (``rehost_select_vms``: the Abiquo API's GETs, or libvirt's
  domain list), each VM's state, virtual CPUs and memory (libvirt) and its inactive XML;
- the size and allocation of each file disk (``stat``, one command per host) and, for an image
  format, its virtual size (``qemu-img info``, one command per host);
- the domains on the hosts that the campaign does not move (their count, CPUs and memory),
  for a note: the lab does not reproduce them.

It writes a description (:mod:`rehost.lab.description`) with:

- the hosts: names, racks (``[hosts.NAME] rack``), the lab personality nearest to each host's
  release (same major version, nearest minor), CPUs and memory from its facts (libvirt) or,
  on an Abiquo site, from Abiquo's machine record (``rehost_host_capacity``: what Abiquo's
  allocator and the evacuation plan count, and what the lab's emulator will say);
- the VMs: name (Abiquo's name, or the domain's), uuid, host, virtual CPUs, memory, whether
  it runs, whether Abiquo captured it, its file disks in order (format: raw or qcow2; sizes
  scaled, see :func:`scale_disk`) and whether it has a block volume;
- ``[lab] control`` as the site's ``[control] strategy`` (``abiquo``, with ``abiquo`` =
  ``[abiquo] version``; or ``libvirt``), ``shared_datastore`` when the site's storage strategy
  is ``shared``, the datastore path the hosts share (``/var/lib/virt`` when it cannot be a lab
  path).

Names are data: every string is written as an escaped TOML basic string
(:func:`toml_string`), and the text is parsed back with the lab's own loader before it is
written.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import uuid as uuidlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehost.core.errors import ConfigError, RehostError
from rehost.lab.description import PERSONALITIES, parse_description
from rehost.lab.hosts import BIND_DIRS

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM, Disk

MIB = 1 << 20
#: disk sizes in the lab: the site's times this (``--scale``)
DEFAULT_SCALE = Fraction(1, 64)
#: no lab disk is smaller than this (MiB, virtual), nor holds less data than MIN_DATA_MIB
MIN_SIZE_MIB = 16
MIN_DATA_MIB = 1
#: no lab VM or host has less memory than this (MiB)
MIN_RAM_MIB = 16
#: the lab's datastore where the site's cannot be used
DEFAULT_DATASTORE = "/var/lib/virt"
#: a lab host's name becomes a folder, a network namespace and a host name
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_RELEASE = re.compile(r"\brelease (\d+)(?:\.(\d+))?")
_VIRTUAL_SIZE = re.compile(r"virtual size:.*\((\d+) bytes\)")
_IMAGE_FORMAT = re.compile(r"^[a-z0-9]{1,16}$")
#: ``sh -c``: $1 a token, then pairs of (format, path); prints "TOKEN" before the
#: ``qemu-img info`` of each image (``-U``, where qemu-img has it, reads an image in use)
_QEMU_INFO = ('t=$1; shift; while [ $# -ge 2 ]; do printf "%s\\n" "$t"; '
              'qemu-img info -U -f "$1" "$2" 2>/dev/null || qemu-img info -f "$1" "$2"; '
              'shift 2; done')


# -- scaling -----------------------------------------------------------------------------------


def parse_scale(text: str, what: str = "--scale") -> Fraction:
    """``1/64``, ``0.25`` or ``1``: more than 0, at most 1."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{what} {text!r}: give a fraction such as 1/64 or 0.25") from None
    if not 0 < value <= 1:
        raise ConfigError(f"{what} {text!r}: must be more than 0 and at most 1")
    return value


def scale_disk(virtual_bytes: int, allocated_bytes: int, scale: Fraction) -> tuple[int, int]:
    """A site disk's lab shape ``(size_mib, data_mib)``: its virtual size times ``scale``,
    rounded up to whole MiB, at least MIN_SIZE_MIB; its data (the bytes allocated on the
    datastore) times ``scale``, to the nearest MiB (a file system's few blocks of metadata
    do not add a MiB), at least MIN_DATA_MIB and at most the size."""
    size = max(MIN_SIZE_MIB, math.ceil(Fraction(max(0, virtual_bytes)) * scale / MIB))
    data = max(MIN_DATA_MIB,
               math.floor(Fraction(max(0, allocated_bytes)) * scale / MIB + Fraction(1, 2)))
    return size, min(size, data)


def scale_memory(mib: int, scale: Fraction) -> int:
    """Memory (MiB) times ``scale``, rounded up, at least MIN_RAM_MIB."""
    return max(MIN_RAM_MIB, math.ceil(Fraction(mib) * scale))


def nearest_personality(release: str, role: str, abiquo: str | None = None
                        ) -> tuple[str, str | None]:
    """The lab personality nearest to a host's ``/etc/redhat-release``: the same major
    version, the nearest minor (the newer of two as near). A release the lab cannot place
    (not 5 or 6) goes by the host's role: a source is CentOS 5.11, a target CentOS 6.4 (6.3
    for Abiquo 2.4). Returns the personality and a note when it is not the host's own."""
    known = sorted((int(k.split("-")[1].split(".")[0]), int(k.split(".")[1]), k)
                   for k in PERSONALITIES)
    found = _RELEASE.search(release or "")
    if found:
        major, minor = int(found.group(1)), int(found.group(2) or 0)
        same = [k for k in known if k[0] == major]
        if same:
            best = min(same, key=lambda k: (abs(k[1] - minor), -k[1]))
            note = (None if best[1] == minor and found.group(2) else
                    f"runs {release.strip()!r}: the nearest lab personality is {best[2]}")
            return best[2], note
    if role == "source":
        chosen = "centos-5.11"
    elif role == "target":
        chosen = "centos-6.3" if abiquo == "2.4" else "centos-6.4"
    else:
        raise ConfigError(f"a host runs {release.strip()!r} and has no role: the lab has no "
                          "personality for it")
    return chosen, (f"runs {release.strip()!r}, which no lab personality resembles: as a "
                    f"{role} host it becomes {chosen}")


# -- TOML --------------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string: quote, backslash and every control character
    (U+0000 to U+001F, U+007F) escaped, everything else as it is (the file is UTF-8). A lone
    surrogate (text that was not Unicode) cannot be written: ConfigError."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ConfigError(f"{value!r} cannot be written as TOML: it is not Unicode text")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    """A TOML value: strings escaped, booleans, integers, lists, tables (inline; the keys
    are rehost's own, bare)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _comment(text: str) -> str:
    """A comment line that no data can break: control characters escaped as in a string."""
    return "# " + toml_string(text)[1:-1].replace('\\"', '"')


# -- what the site has -------------------------------------------------------------------------


@dataclass
class SiteDisk:
    path: str
    format: str  # raw or qcow2 (the lab's)
    site_format: str
    virtual: int  # bytes the guest sees
    allocated: int  # bytes the datastore holds


@dataclass
class SiteVM:
    name: str  # the name people know (Abiquo's), or the domain's
    domain: str
    uuid: str
    host: str
    cpu: int
    ram_mib: int
    running: bool
    captured: bool
    disks: list[SiteDisk] = field(default_factory=list)
    volume: bool = False


@dataclass
class SiteHost:
    name: str
    role: str
    rack: str
    release: str
    cpus: int
    memory_mib: int
    datastore: str
    #: domains there that the campaign does not move: (count, CPUs, MiB)
    others: tuple[int, int, int] = (0, 0, 0)
    #: who said ``cpus`` and ``memory_mib``: ``Abiquo`` (its machine record) or ``libvirt``
    seen_by: str = "libvirt"
    #: what libvirt says the host has
    host_cpus: int = 0
    host_memory_mib: int = 0


@dataclass
class Site:
    config_path: str
    campaign: str
    control: str
    abiquo: str | None
    shared: bool
    hosts: list[SiteHost]
    vms: list[SiteVM]
    notes: list[str] = field(default_factory=list)


def read_site(config_path: str) -> Site:
    """Read what a mirror needs from the site, read-only, through a dry-run campaign whose
    state folder is a temporary one (the site's own is left alone)."""
    from rehost.core.campaign import Campaign
    from rehost.core.config import load_config
    from rehost.core.pipeline import configured, select_vms

    cfg = load_config(config_path)
    control = cfg.control.strategy
    if control not in ("abiquo", "libvirt"):
        raise ConfigError(f"[control] strategy is {control!r}: the lab plays abiquo or libvirt "
                          "only")
    with tempfile.TemporaryDirectory(prefix="rehost-mirror-") as tmp:
        cfg.campaign.state_dir = tmp
        cfg.campaign.report_dir = os.path.join(tmp, "reports")
        ctx = Campaign(cfg, dry_run=True)
        try:
            with configured(ctx):
                ctx.discovered = ctx.hooks.discover_hosts(ctx)
                vms = select_vms(ctx)
                return _read(ctx, vms, str(config_path))
        finally:
            ctx.close()


def _read(ctx: Campaign, vms: list[VM], config_path: str) -> Site:
    cfg = ctx.config
    abiquo = None
    if cfg.control.strategy == "abiquo":
        settings = ctx.settings("abiquo")
        abiquo = str(getattr(settings, "version", "2.6") or "2.6")
    hosts = list(cfg.hosts.values())
    if not hosts:
        raise ConfigError("the site config names no hosts, and the control plane found none")
    bad = [h.name for h in hosts if not HOST_NAME.match(h.name)]
    if bad:
        raise ConfigError(f"host {bad[0]!r} cannot be a lab host's name (letters, digits, "
                          "'.', '_' and '-', at most 63): rename it in a copy of the site "
                          "config")
    notes: list[str] = []
    by_host: dict[str, list[VM]] = {h.name: [] for h in hosts}
    for vm in vms:
        if vm.source_host in by_host:
            by_host[vm.source_host].append(vm)
        else:
            notes.append(f"VM {vm.label or vm.name}: on no host of the site config "
                         f"({vm.source_host or 'unknown'}): left out")
    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        results = list(pool.map(lambda h: _read_host(ctx, h, by_host[h.name]), hosts))
    errors = [err for _, _, _, err in results if err]
    if errors:
        raise RehostError("the mirror needs every host of the site: " + "; ".join(errors))
    site_hosts: list[SiteHost] = []
    site_vms: list[SiteVM] = []
    for host_rec, host_vms, host_notes, _ in results:
        assert host_rec is not None
        site_hosts.append(host_rec)
        site_vms.extend(host_vms)
        notes.extend(host_notes)
    return Site(config_path, cfg.campaign.name, cfg.control.strategy, abiquo,
                cfg.storage.strategy == "shared", site_hosts, site_vms, notes)


def _read_host(ctx: Campaign, host: Any, vms: list[VM]
               ) -> tuple[SiteHost | None, list[SiteVM], list[str], str | None]:
    """One host: its facts, the VMs of the campaign on it and their disks."""
    from rehost.core.disks import parse_disks

    notes: list[str] = []
    try:
        facts = ctx.facts(host.name)
        hv = ctx.hypervisor(host.name)
        found: list[SiteVM] = []
        disks_of: dict[str, list[Disk]] = {}
        for vm in vms:
            label = vm.label or vm.name
            if not hv.exists(vm.name):
                notes.append(f"VM {label}: no domain {vm.name} on {host.name}: left out")
                continue
            info = hv.domain(vm.name)
            cpus, mib = hv.resources(vm.name)
            disks = parse_disks(hv.dumpxml(vm.name, inactive=True))
            disks_of[vm.name] = [d for d in disks if d.is_file]
            volume = any(d.type == "block" and d.device == "disk" for d in disks)
            for d in disks:
                if d.device == "disk" and d.type not in ("file", "block"):
                    notes.append(f"VM {label}: its {d.type} disk {d.target} is not mirrored "
                                 "(the lab has file disks and one block volume)")
            captured = ctx.config.control.strategy == "abiquo" and vm.name != f"ABQ_{vm.uuid}"
            found.append(SiteVM(label, vm.name, vm.uuid, host.name, cpus, mib,
                                info.active, captured, volume=volume))
        _read_disks(ctx, host.name, found, disks_of, notes)
        selected = {vm.name for vm in vms}
        others = [d.name for d in hv.domains() if d.name not in selected]
        used = [hv.resources(n) for n in others]
        cpus, mib, seen_by = _machine(ctx, host.name, facts.cpus, facts.memory_mib, notes)
        rec = SiteHost(host.name, host.role, host.rack, facts.os_release, cpus, mib,
                       host.datastore,
                       (len(others), sum(c for c, _ in used), sum(m for _, m in used)),
                       seen_by, facts.cpus, facts.memory_mib)
        return rec, found, notes, None
    except RehostError as exc:
        return None, [], notes, f"{host.name}: {exc}"


def _machine(ctx: Campaign, host: str, cpus: int, mib: int, notes: list[str]
             ) -> tuple[int, int, str]:
    """A host's CPUs and memory as the lab should have them: Abiquo's machine record on an
    Abiquo site (its allocator, the preflight and the evacuation plan count those, and the
    lab's emulator plays them from the description), else the host's own (libvirt)."""
    if ctx.config.control.strategy != "abiquo":
        return cpus, mib, "libvirt"
    try:
        cap = ctx.hooks.host_capacity(ctx, host)
    except RehostError as exc:
        notes.append(f"host {host}: Abiquo did not say its CPUs and memory ({exc}): the "
                     "host's own are taken")
        return cpus, mib, "libvirt"
    if cap is None or cap.cpus <= 0 or cap.memory_mib <= 0:
        return cpus, mib, "libvirt"
    return cap.cpus, cap.memory_mib, "Abiquo"


def _read_disks(ctx: Campaign, host: str, vms: list[SiteVM], disks_of: dict[str, list[Disk]],
                notes: list[str]) -> None:
    """Size and allocation of every file disk of the host's VMs: one ``stat`` command, and
    one ``qemu-img info`` command for the disks of an image format."""
    sh = ctx.shell(host)
    paths = [d.source or "" for vm in vms for d in disks_of[vm.domain]]
    stats = sh.probe_paths(paths) if paths else {}
    images = [(d.format or "", d.source or "") for vm in vms for d in disks_of[vm.domain]
              if (d.format or "raw") != "raw" and stats.get(d.source or "") is not None
              and _IMAGE_FORMAT.match(d.format or "")]
    virtual = _image_sizes(sh, images) if images else {}
    for vm in vms:
        for d in disks_of[vm.domain]:
            path = d.source or ""
            site_format = d.format or "raw"
            fmt = site_format if site_format in ("raw", "qcow2") else "qcow2"
            if fmt != site_format:
                notes.append(f"VM {vm.name}: disk {d.target} is {site_format}: the lab makes "
                             "it qcow2")
            st = stats.get(path)
            if st is None:
                notes.append(f"VM {vm.name}: disk {path} is not on {host}: the lab gives it "
                             "the smallest size")
                vm.disks.append(SiteDisk(path, fmt, site_format, 0, 0))
                continue
            size = st.size if site_format == "raw" else virtual.get(path)
            if size is None:
                notes.append(f"VM {vm.name}: qemu-img did not tell the virtual size of {path}: "
                             "its file size is taken")
                size = st.size
            vm.disks.append(SiteDisk(path, fmt, site_format, size, st.allocated))


def _image_sizes(sh: Any, images: Sequence[tuple[str, str]]) -> dict[str, int]:
    token = uuidlib.uuid4().hex
    args = [a for fmt, path in images
            for a in (fmt, path if path.startswith("/") else "./" + path)]
    out = sh.run(["sh", "-c", _QEMU_INFO, "rehost-mirror", token, *args], check=False,
                 timeout=300).stdout
    parts = out.split(token + "\n")[1:]
    sizes: dict[str, int] = {}
    for (_, path), part in zip(images, parts, strict=False):
        found = _VIRTUAL_SIZE.search(part)
        if found:
            sizes[path] = int(found.group(1))
    return sizes


# -- the description ---------------------------------------------------------------------------


def _lab_datastore(site: Site, notes: list[str]) -> str:
    paths = Counter(h.datastore for h in site.hosts)
    best = paths.most_common(1)[0][0]
    if len(paths) > 1:
        notes.append(f"the hosts' datastores differ ({', '.join(sorted(paths))}): the lab's "
                     f"hosts all use {best}")
    norm = os.path.normpath(best) if best.startswith("/") else ""
    reserved = [inside for inside, _ in BIND_DIRS]
    if (norm != best or norm == "/" or not norm.isprintable()
            or any(norm == r or norm.startswith(r + "/") or r.startswith(norm + "/")
                   for r in reserved)):
        notes.append(f"the datastore {best!r} cannot be a lab path: the lab uses "
                     f"{DEFAULT_DATASTORE}")
        return DEFAULT_DATASTORE
    return best


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{round(n / MIB)} MiB"


def render_description(site: Site, scale: Fraction = DEFAULT_SCALE,
                       memory_scale: Fraction = Fraction(1)) -> tuple[str, list[str]]:
    """The lab description's text, and notes on what the lab does not reproduce."""
    notes = list(site.notes)
    datastore = _lab_datastore(site, notes)
    name = "mirror-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", site.campaign).strip("-")[:50]
                        or "site")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# A rehearsal lab shaped like a real site, written by `rehost lab mirror` on "
        f"{when}.",
        _comment(f"site config: {site.config_path} (campaign {site.campaign})"),
        f"# disks: the site's sizes times {scale} (at least {MIN_SIZE_MIB} MiB; data at least "
        f"{MIN_DATA_MIB} MiB); memory times {memory_scale} (at least {MIN_RAM_MIB} MiB).",
        "# Bring it up with `rehost lab up -d THIS_FILE` (as root).",
        "",
        "[lab]",
        f"name = {toml_string(name)}",
        f"datastore = {toml_string(datastore)}",
        f"shared_datastore = {toml_value(site.shared)}",
        f"control = {toml_string(site.control)}",
    ]
    if site.control == "abiquo":
        lines.append(f"abiquo = {toml_string(site.abiquo or '2.6')}")
    for h in site.hosts:
        os_name, note = nearest_personality(h.release, h.role, site.abiquo)
        if note:
            notes.append(f"host {h.name} {note}")
        if (h.role == "source") != os_name.startswith("centos-5"):
            notes.append(f"host {h.name} is a {h.role} in the site config but runs "
                         f"{h.release.strip()!r}: in the lab it is a "
                         f"{'source' if os_name.startswith('centos-5') else 'target'}")
        count, cpus, mib = h.others
        if count:
            notes.append(f"host {h.name} has {count} domain(s) the campaign does not move "
                         f"({cpus} CPU, {mib} MiB): the lab's {h.name} does not have them")
        lines += [
            "",
            "[[hosts]]",
            f"name = {toml_string(h.name)}",
            f"os = {toml_string(os_name)}  " + _comment(f"site: {h.release.strip()}"),
            f"cpus = {max(1, h.cpus)}  # site: {h.cpus} as {h.seen_by} says"
            + (f" (libvirt: {h.host_cpus})" if h.host_cpus and h.seen_by != "libvirt"
               else ""),
            f"ram_mib = {scale_memory(h.memory_mib, memory_scale)}  # site: {h.memory_mib} MiB"
            + (f" (libvirt: {h.host_memory_mib} MiB)"
               if h.host_memory_mib and h.seen_by != "libvirt" else ""),
        ]
        if h.rack:
            lines.append(f"rack = {toml_string(h.rack)}")
    seen_uuids: set[str] = set()
    names = Counter(v.name for v in site.vms)
    for name_, n in names.items():
        if n > 1:
            notes.append(f"{n} VMs are named {name_!r}")
    for v in site.vms:
        lines += ["", "[[vms]]", f"name = {toml_string(v.name)}"]
        if _is_uuid(v.uuid) and v.uuid.lower() not in seen_uuids:
            seen_uuids.add(v.uuid.lower())
            lines.append(f"uuid = {toml_string(v.uuid)}")
        elif v.uuid:
            notes.append(f"VM {v.name}: uuid {v.uuid!r} not kept (not a uuid, or another VM's)")
        lines += [
            f"host = {toml_string(v.host)}",
            f"cpu = {max(1, v.cpu)}",
            f"ram_mib = {scale_memory(v.ram_mib, memory_scale)}"
            + (f"  # site: {v.ram_mib} MiB" if memory_scale != 1 else ""),
        ]
        if not v.running:
            lines.append("running = false")
        if v.captured:
            lines.append("captured = true")
        if v.volume:
            lines.append("volume = true")
        if not v.disks:
            lines.append("disks = []")
            continue
        lines.append("disks = [")
        for d in v.disks:
            size, data = scale_disk(d.virtual, d.allocated, scale)
            table = {"size_mib": size, "format": d.format, "data_mib": data}
            lines.append(f"  {toml_value(table)},  "
                         f"# site: {d.site_format}, {_size(d.virtual)}, "
                         f"{_size(d.allocated)} allocated")
        lines.append("]")
    return "\n".join(lines) + "\n", notes


def _is_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


@dataclass
class MirrorResult:
    text: str
    hosts: int
    vms: int
    disk_mib: int  # the lab's disks' virtual sizes, together
    data_mib: int  # the data they hold
    ram_mib: int  # the running VMs' memory
    notes: list[str]


def mirror(config_path: str, output: str | None, scale: Fraction = DEFAULT_SCALE,
           memory_scale: Fraction = Fraction(1)) -> MirrorResult:
    """Read the site (read-only), write its lab description to ``output`` (None: only
    return it), checked with the lab's own loader first."""
    site = read_site(config_path)
    text, notes = render_description(site, scale, memory_scale)
    desc = parse_description(text, output or "<mirror>")  # it must load as it is written
    if output:
        path = Path(output)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return MirrorResult(
        text, len(desc.hosts), len(desc.vms),
        sum(d.size_mib for v in desc.vms for d in v.disks),
        sum(d.data_mib for v in desc.vms for d in v.disks),
        sum(v.ram_mib for v in desc.vms if v.running), notes)
