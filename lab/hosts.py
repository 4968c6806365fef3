"""Lab hosts: real libvirtd + sshd in their own network, mount and UTS namespaces (LAB.md).

Each host gets a copy of /etc (with its own /etc/redhat-release, libvirt and sshd config) and
its own /run, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt, /root/.ssh and datastore,
bind-mounted inside its mount namespace. Every process the lab starts is found again by its pid
file; nothing is ever killed by name.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from rehost.core.errors import LabError


def instance() -> str:
    """Several labs can be up at once (one per developer or test run): REHOST_LAB_INSTANCE
    (a number, default 0) keeps their namespaces, interfaces, addresses and folders apart."""
    value = os.environ.get("REHOST_LAB_INSTANCE", "0").strip() or "0"
    if not value.isdigit() or int(value) > 250:
        raise LabError(f"REHOST_LAB_INSTANCE must be a number from 0 to 250, not {value!r}")
    return str(int(value))


def _suffix() -> str:
    return "" if instance() == "0" else instance()


def netns_prefix() -> str:
    return f"rhlab{_suffix()}-"


def bridge_ns() -> str:
    return netns_prefix() + "br"


def root_veth() -> str:
    return f"rhlab{_suffix()}x"


def default_network() -> str:
    return f"198.18.{instance()}.0/24"

#: (host path inside the host, folder of the host's own copy)
BIND_DIRS: tuple[tuple[str, str], ...] = (
    ("/etc", "etc"),
    ("/run", "run"),
    ("/var/lib/libvirt", "var-lib-libvirt"),
    ("/var/log/libvirt", "var-log-libvirt"),
    ("/var/cache/libvirt", "var-cache-libvirt"),
    ("/root/.ssh", "root-ssh"),
)

#: this machine's root's shell start-up file, hidden in each host (see start_host)
RC_FILE = Path("/root/.bashrc")

REQUIRED_COMMANDS: dict[str, str] = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "losetup": "mount",
    "libvirtd": "libvirt-daemon",
    "virtlogd": "libvirt-daemon",
    "virsh": "libvirt-clients",
    "virt-ssh-helper": "libvirt-daemon",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "rsync": "rsync",
}


def run(argv: list[str], *, check: bool = True, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a lab set-up command (argument list, never a shell string)."""
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise LabError(f"lab: `{' '.join(argv)}` exited with {proc.returncode}: "
                       f"{proc.stderr.strip()[-400:]}")
    return proc


def check_prerequisites() -> None:
    """Fail early, naming the Debian packages that are missing."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces, libvirtd as root)")
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items()
                      if shutil.which(cmd, path=search) is None})
    if missing:
        raise LabError("the lab needs these Debian packages: " + " ".join(missing)
                       + " (apt-get install -y --no-install-recommends ...)")


def ensure_qemu_user() -> None:
    """libvirtd looks its default user up before reading qemu.conf (LAB.md)."""
    if run(["getent", "group", "libvirt-qemu"], check=False).returncode != 0:
        run(["groupadd", "-r", "libvirt-qemu"])
    if run(["getent", "passwd", "libvirt-qemu"], check=False).returncode != 0:
        run(["useradd", "-r", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s",
             "/usr/sbin/nologin", "libvirt-qemu"])


@dataclass
class HostLayout:
    """Where a lab host's files live on the controller, and how it is reached."""

    name: str
    index: int
    address: str
    root: Path
    datastore_dir: Path  # the controller's path of the host's datastore
    datastore: str  # the datastore's path inside the host
    #: a second datastore of the host's own, never shared (a VM deployed to a local disk):
    #: its path inside the host ("" none) and the controller's path of it
    local_datastore: str = ""
    local_dir: Path | None = None

    @property
    def netns(self) -> str:
        return netns_prefix() + self.name

    def path(self, sub: str) -> Path:
        return self.root / sub

    @property
    def libvirt_socket(self) -> Path:
        return self.root / "run" / "libvirt" / "libvirt-sock"

    def pid_files(self) -> list[Path]:
        run_dir = self.root / "run"
        qemu = sorted((run_dir / "libvirt" / "qemu").glob("*.pid"))
        return [*qemu, run_dir / "sshd-lab.pid", run_dir / "libvirtd.pid", run_dir / "virtlogd.pid"]

    def datastore_in_controller(self, path_in_host: str) -> Path:
        """The controller's path of a file the host sees at ``path_in_host``."""
        if self.local_datastore and self.local_dir is not None:
            rel = os.path.relpath(path_in_host, self.local_datastore)
            if not rel.startswith(".."):
                return self.local_dir / rel
        rel = os.path.relpath(path_in_host, self.datastore)
        if rel.startswith(".."):
            raise ValueError(f"{path_in_host!r} is not under the datastore {self.datastore!r}")
        return self.datastore_dir / rel


# -- network -----------------------------------------------------------------------------------


def host_addresses(network: str, count: int) -> tuple[str, list[str], int]:
    net = ipaddress.ip_network(network)
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(
            ipaddress.IPv4Network("198.18.0.0/15")):
        raise LabError(f"lab network {network} must lie in 198.18.0.0/15 (reserved for testing)")
    hosts = list(net.hosts())
    if len(hosts) < count + 11:
        raise LabError(f"lab network {network} is too small for {count} hosts")
    return str(hosts[0]), [str(hosts[10 + i]) for i in range(count)], net.prefixlen


def create_network(layouts: list[HostLayout], controller: str, prefix: int) -> None:
    br, veth = bridge_ns(), root_veth()
    run(["ip", "netns", "add", br])
    nsx = ["ip", "netns", "exec", br]
    run([*nsx, "ip", "link", "set", "lo", "up"])
    run([*nsx, "ip", "link", "add", "br0", "type", "bridge"])
    run([*nsx, "ip", "link", "set", "br0", "up"])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "rhlab0p", "netns", br])
    run(["ip", "addr", "add", f"{controller}/{prefix}", "dev", veth])
    run(["ip", "link", "set", veth, "up"])
    run([*nsx, "ip", "link", "set", "rhlab0p", "master", "br0", "up"])
    for h in layouts:
        run(["ip", "netns", "add", h.netns])
        hx = ["ip", "netns", "exec", h.netns]
        run(["ip", "link", "add", f"rhl{h.index}a", "netns", h.netns, "type", "veth", "peer",
             "name", f"rhl{h.index}b", "netns", br])
        run([*hx, "ip", "link", "set", f"rhl{h.index}a", "name", "eth0"])
        run([*hx, "ip", "addr", "add", f"{h.address}/{prefix}", "dev", "eth0"])
        run([*hx, "ip", "link", "set", "eth0", "up"])
        run([*hx, "ip", "link", "set", "lo", "up"])
        run([*nsx, "ip", "link", "set", f"rhl{h.index}b", "master", "br0", "up"])


def lab_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(netns_prefix())]


def any_lab_namespaces() -> list[str]:
    """Namespaces of every lab instance on this machine."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith("rhlab")]


def delete_network() -> None:
    for ns in lab_namespaces():
        run(["ip", "netns", "del", ns], check=False)
    if run(["ip", "link", "show", root_veth()], check=False).returncode == 0:
        run(["ip", "link", "del", root_veth()], check=False)


# -- a host's files ----------------------------------------------------------------------------

LIBVIRTD_CONF = """\
# rehost lab host {name}
host_uuid = "{host_uuid}"
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

QEMU_CONF = """\
# rehost lab host: qemu runs as root, no security driver, no cgroups in a namespace
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
"""

SSHD_CONFIG = """\
# rehost lab host {name}
ListenAddress {address}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd-lab.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile /root/.ssh/authorized_keys
UsePAM no
StrictModes no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
"""


def prepare_host_files(h: HostLayout, release: str, lab_key: Path, known_hosts: str) -> None:
    h.root.mkdir(parents=True, exist_ok=True)
    # a copy of the machine's /etc is the host's /etc: its own release file, configs, keys
    run(["cp", "-a", "/etc", str(h.path("etc"))])
    for _, sub in BIND_DIRS[1:]:
        h.path(sub).mkdir(parents=True, exist_ok=True)
    etc = h.path("etc")
    (etc / "redhat-release").write_text(release + "\n")
    (etc / "hostname").write_text(h.name + "\n")
    (etc / "libvirt").mkdir(exist_ok=True)
    (etc / "libvirt" / "libvirtd.conf").write_text(
        LIBVIRTD_CONF.format(name=h.name, host_uuid=uuidlib.uuid5(uuidlib.NAMESPACE_DNS,
                                                                  f"{h.name}.rehost-lab"))
    )
    (etc / "libvirt" / "qemu.conf").write_text(QEMU_CONF)
    for old in (etc / "ssh").glob("ssh_host_*"):
        old.unlink()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}", "-f",
         str(etc / "ssh" / "ssh_host_ed25519_key")])
    (etc / "ssh" / "sshd_config_lab").write_text(SSHD_CONFIG.format(name=h.name,
                                                                    address=h.address))
    (h.path("run") / "sshd").mkdir(exist_ok=True)
    os.chmod(h.path("run") / "sshd", 0o755)
    ssh_dir = h.path("root-ssh")
    os.chmod(ssh_dir, 0o700)
    shutil.copy(lab_key, ssh_dir / "id_ed25519")
    os.chmod(ssh_dir / "id_ed25519", 0o600)
    shutil.copy(lab_key.with_suffix(".pub"), ssh_dir / "authorized_keys")
    (ssh_dir / "known_hosts").write_text(known_hosts)
    (ssh_dir / "config").write_text("Host *\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
                                    "  IdentityFile /root/.ssh/id_ed25519\n")
    h.datastore_dir.mkdir(parents=True, exist_ok=True)
    if h.local_dir is not None:
        h.local_dir.mkdir(parents=True, exist_ok=True)


def host_public_key(h: HostLayout) -> str:
    return (h.path("etc") / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]


def start_host(h: HostLayout) -> None:
    """Start virtlogd, libvirtd and sshd inside the host's namespaces."""
    mounts = [(str(h.path(sub)), inside) for inside, sub in BIND_DIRS]
    mounts.append((str(h.datastore_dir), h.datastore))
    if h.local_datastore and h.local_dir is not None:
        mounts.append((str(h.local_dir), h.local_datastore))
    # the hosts share this machine's /root (all but .ssh): its .bashrc would run for every ssh
    # command (bash reads it when sshd starts it). Where that starts a Python version manager
    # (pyenv init: about 0.3 s a command) the lab would be far slower than a CentOS host, whose
    # root runs no such thing: each host sees an empty one
    if RC_FILE.is_file():
        empty = h.path("root-bashrc")
        empty.write_text("# a lab host runs none of this machine's shell start-up files\n")
        mounts.append((str(empty), str(RC_FILE)))
    script = ["set -e"]
    for i in range(len(mounts)):
        # "$1".."$N" pairs: paths are data, passed as arguments, never pasted into the script
        script.append(f'mount --bind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}"')
    script += [
        'hostname "$HOSTNAME_LAB"',
        "virtlogd -d",
        "libvirtd -d",
        "/usr/sbin/sshd -f /etc/ssh/sshd_config_lab",
    ]
    args: list[str] = []
    for src, dst in mounts:
        args += [src, dst]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOSTNAME_LAB": h.name, "HOME": "/root", "LANG": "C"}
    proc = subprocess.run(
        ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--uts", "--propagation",
         "private", "sh", "-c", "\n".join(script), "lab-host", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"lab host {h.name} did not start: {proc.stderr.strip()[-600:]}")


def wait_ready(h: HostLayout, timeout: float = 60) -> None:
    """Wait until libvirtd's socket and sshd's pid file exist (both daemons are ready)."""
    deadline = time.monotonic() + timeout
    want = [h.libvirt_socket, h.path("run") / "sshd-lab.pid"]
    while time.monotonic() < deadline:
        if all(p.exists() for p in want):
            return
        time.sleep(0.05)
    missing = [str(p) for p in want if not p.exists()]
    log = h.path("var-log-libvirt") / "libvirtd.log"
    tail = log.read_text()[-800:] if log.exists() else ""
    raise LabError(f"lab host {h.name} is not ready after {timeout:g} s: missing {missing}\n{tail}")


# -- stopping ----------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purpose
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def netns_pids(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def stop_pids(pids: list[int], timeout: float = 10) -> None:
    """SIGTERM, wait for exit, then SIGKILL what is left."""
    pids = [p for p in pids if p > 1 and _pid_alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if _pid_alive(p):
            logger.warning("lab: pid {} did not stop on SIGTERM; killing it", p)
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def stop_host(h: HostLayout) -> None:
    """Stop qemu first (by its pid files), then sshd, libvirtd, virtlogd; then whatever else
    the lab started inside the host's network namespace (sessions, helpers)."""
    qemu = [p for f in h.pid_files()[:-3] if (p := read_pid(f))]
    stop_pids(qemu)
    daemons = [p for f in h.pid_files()[-3:] if (p := read_pid(f))]
    stop_pids(daemons)
    stop_pids(netns_pids(h.netns))
