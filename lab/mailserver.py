"""The lab's SMTP server: a relay that keeps every message it receives, one file each.

``rehost lab up`` starts it (``python -m rehost.lab.mailserver --lab-dir DIR``) as a process of
its own, like the Abiquo emulator; ``lab down`` stops it by the pid recorded in ``lab.json``.
It listens on the lab's own address (the controller's, on the lab network) and behaves like a
site relay that wants both STARTTLS and a login: its certificate is signed by a CA the lab makes
at ``up`` (``LAB_DIR/smtp/ca.pem``, which the site config names as ``ca_file``), and its user
``rehost`` has a random password in a file only root reads.

Each message it accepts is kept as ``LAB_DIR/mail/NNN.eml`` (the bytes as received) beside
``NNN.json`` (the envelope: sender, recipients, whether it came over TLS, the login).
:func:`read_mails` reads them back for tests. While a file ``LAB_DIR/mail/refuse`` exists it
answers every message with ``554`` (a relay that refuses mail): :func:`refuse` sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import secrets
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from rehost.core.errors import LabError

USER = "rehost"
#: where the messages are kept, under the lab's folder
MAIL_DIR = "mail"
#: the server's own files (certificates, password, log), under the lab's folder
SERVER_DIR = "smtp"
REFUSE = "refuse"


# -- set-up: certificates and the process ------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise LabError(f"lab: openssl {args[0]} failed: {done.stderr.strip()[-300:]}")


def make_certificates(folder: Path, address: str) -> dict[str, str]:
    """A CA of the lab's own and a certificate it signs for ``address`` (its IP in the
    subjectAltName, as a client checks it)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-subj", "/CN=rehost lab CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj",
             f"/CN={address}", cwd=folder)
    (folder / "server.ext").write_text(
        f"subjectAltName=IP:{address}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "30", "-extfile", "server.ext",
             cwd=folder)
    for key in ("ca.key", "server.key"):
        os.chmod(folder / key, 0o600)
    return {"ca_file": str(folder / "ca.pem"), "cert": str(folder / "server.pem"),
            "key": str(folder / "server.key")}


def _write_secret(path: Path) -> str:
    value = secrets.token_urlsafe(18)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def start_mailserver(state: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Make the certificates and password, spawn the server (log: ``LAB_DIR/smtp/log``),
    wait until it takes a login over STARTTLS, and return what the lab records about it."""
    root = Path(state["root"])
    address = str(state["controller"])
    folder = root / SERVER_DIR
    tls = make_certificates(folder, address)
    password_file = folder / "password"
    password = _write_secret(password_file)
    (root / MAIL_DIR).mkdir(exist_ok=True)
    info_file = folder / "server.json"
    info_file.unlink(missing_ok=True)
    log = folder / "log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rehost.lab.mailserver", "--lab-dir", str(root),
             "--host", address],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    last = "it wrote no server.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"lab: the SMTP server exited with {proc.returncode}: {_tail(log)}")
        if info_file.exists():
            port = int(json.loads(info_file.read_text())["port"])
            try:
                with smtplib.SMTP(address, port, timeout=5) as smtp:
                    smtp.starttls(context=ssl.create_default_context(cafile=tls["ca_file"]))
                    smtp.login(USER, password)
                return {"pid": proc.pid, "host": address, "port": port, "user": USER,
                        "password_file": str(password_file), "ca_file": tls["ca_file"],
                        "dir": str(root / MAIL_DIR), "log": str(log)}
            except (OSError, smtplib.SMTPException) as exc:
                last = str(exc)
        time.sleep(0.1)
    proc.terminate()
    proc.wait(10)
    raise LabError(f"lab: the SMTP server did not answer within {timeout:g} s ({last}); "
                   f"see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- reading the mail back (tests) -------------------------------------------------------------


@dataclass
class LabMail:
    """One message the lab's server kept."""

    number: int
    path: Path
    #: the envelope, as the client gave it (not the headers)
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    login: str | None
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def to(self) -> list[str]:
        """The addresses of the ``To`` header."""
        return [a.addr_spec for a in self.message["To"].addresses] if self.message["To"] else []

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""


def mail_dir(where: Any) -> Path:
    """The folder of the kept messages: of a lab (a ``LabState``), or of a lab folder."""
    root = Path(where) if isinstance(where, str | os.PathLike) else Path(where.root)
    return root / MAIL_DIR


def read_mails(where: Any) -> list[LabMail]:
    """Every message the lab's server kept, in the order it received them."""
    out = []
    for eml in sorted(mail_dir(where).glob("*.eml")):
        meta = json.loads(eml.with_suffix(".json").read_text())
        raw = eml.read_bytes()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(LabMail(int(meta["number"]), eml, meta["mail_from"], list(meta["rcpt_tos"]),
                           bool(meta["tls"]), meta.get("login"), raw, msg))
    return out


def refuse(where: Any, on: bool = True) -> None:
    """Make the lab's server answer ``554`` to every message (``on``), or accept them again."""
    flag = mail_dir(where) / REFUSE
    if on:
        flag.write_text("554\n")
    else:
        flag.unlink(missing_ok=True)


# -- the server --------------------------------------------------------------------------------


class Keeper:
    """aiosmtpd's handler: keeps each message as a file, or refuses it while asked to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        numbers = [int(p.stem) for p in folder.glob("*.eml") if p.stem.isdigit()]
        self.next = max(numbers, default=0) + 1

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if (self.folder / REFUSE).exists():
            return "554 5.7.1 the lab's relay refuses this message (mail/refuse)"
        number, self.next = self.next, self.next + 1
        name = f"{number:03d}"
        meta = {"number": number, "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos), "tls": session.ssl is not None,
                "login": session.auth_data if isinstance(session.auth_data, str) else None,
                "peer": session.peer[0] if session.peer else None, "received": time.time()}
        data = envelope.original_content or envelope.content
        for suffix, content in ((".json", json.dumps(meta).encode()), (".eml", data)):
            tmp = self.folder / f".{name}{suffix}.tmp"
            tmp.write_bytes(content)
            os.replace(tmp, self.folder / f"{name}{suffix}")
        print(f"kept {name}.eml from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}",
              flush=True)
        return f"250 2.0.0 kept as {name}.eml"


async def _serve(root: Path, host: str, port: int) -> None:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    folder = root / SERVER_DIR
    password = (folder / "password").read_text().strip()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    (root / MAIL_DIR).mkdir(exist_ok=True)
    keeper = Keeper(root / MAIL_DIR)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        if (isinstance(data, LoginPassword) and data.login == USER.encode()
                and secrets.compare_digest(data.password, password.encode())):
            return AuthResult(success=True, auth_data=USER)
        return AuthResult(success=False, handled=False)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(keeper, hostname="rehost-lab-smtp", tls_context=context,
                     require_starttls=True, authenticator=authenticate, auth_required=True,
                     auth_require_tls=True),
        host=host, port=port)
    bound = server.sockets[0].getsockname()[1]
    info = {"pid": os.getpid(), "host": host, "port": bound}
    tmp = folder / "server.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, folder / "server.json")
    print(f"serving SMTP on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehost.lab.mailserver")
    parser.add_argument("--lab-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # aiosmtpd reads its own deprecated attribute while logging in
    warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
    asyncio.run(_serve(args.lab_dir, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
