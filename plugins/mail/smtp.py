"""Sending: Python's ``smtplib``, over TLS that is verified unless the site config says not.

Each batch of mails (one VM's owners for one event, or the announcements of a campaign) goes
over one connection: connect (``ssl``: TLS from the start), EHLO, STARTTLS (``starttls``: the
server must offer it), EHLO again, login (when a user is set), then one ``MAIL FROM``/``RCPT
TO`` per mail, its single owner as the only envelope recipient.

When the server cannot be reached or the session breaks (refused, a time limit, TLS, login),
it is not tried again for ``retry_after`` seconds: the mails meanwhile fail at once, so that a
dead server costs each VM's move nothing but the first time limit. A server that refuses one
mail (a 5xx answer) fails that mail only.

Nothing here ever shows the password: it is given to ``smtplib`` only, and it (and its
base64 forms, as AUTH sends them) is removed from any error text before it is shown.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage

from rehost.plugins.mail.settings import MailSettings

#: errors of the connection or the session (not of one mail): the server counts as down
SESSION_ERRORS = (OSError, smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected,
                  smtplib.SMTPHeloError, smtplib.SMTPAuthenticationError,
                  smtplib.SMTPNotSupportedError, ssl.SSLError)


class Mailer:
    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down_reason = ""

    # -- the words never to show -----------------------------------------------------------------

    def _secret_forms(self) -> list[str]:
        try:
            password = self.settings.password()
        except Exception:
            return []
        if not password:
            return []
        user = self.settings.user or ""
        forms = [password]
        for raw in (password, f"\0{user}\0{password}", f"{user}\0{password}"):
            forms.append(base64.b64encode(raw.encode()).decode())
        return forms

    def scrub(self, text: str) -> str:
        for word in sorted(self._secret_forms(), key=len, reverse=True):
            if len(word) >= 4:
                text = text.replace(word, "[redacted]")
        return text

    def describe(self, exc: BaseException) -> str:
        """An SMTP error as one line an operator can act on, without any secret."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            parts = [f"{rcpt} refused: {code} {_text(msg)}"
                     for rcpt, (code, msg) in exc.recipients.items()]
            text = "; ".join(parts) or "recipient refused"
        elif isinstance(exc, smtplib.SMTPResponseException):
            text = f"the server answered {exc.smtp_code} {_text(exc.smtp_error)}"
        elif isinstance(exc, TimeoutError | socket.timeout):
            text = f"no answer within {self.settings.timeout:g} s"
        else:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        where = f"{self.settings.host}:{self.settings.port_number}"
        return self.scrub(f"SMTP server {where}: {text}".replace("\r", " ").replace("\n", " "))

    # -- the session --------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file)
        if not s.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def open(self) -> smtplib.SMTP:
        """A session ready to send: connected, TLS as configured, logged in."""
        s = self.settings
        assert s.host is not None
        local = socket.gethostname() or "localhost"  # not getfqdn: no DNS lookup to wait for
        smtp: smtplib.SMTP
        if s.tls == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.port_number, local_hostname=local,
                                    timeout=s.timeout, context=self._tls())
        else:
            smtp = smtplib.SMTP(s.host, s.port_number, local_hostname=local,
                                timeout=s.timeout)
        try:
            smtp.ehlo()
            if s.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError(
                        "the server does not offer STARTTLS (tls = \"starttls\")")
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            password = s.password()
            if s.user and password is not None:
                smtp.login(s.user, password)
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def check(self) -> str | None:
        """Whether the server takes a session (connect, TLS, login): None, or what failed
        (the server then counts as down for ``retry_after`` seconds)."""
        try:
            _close(self.open(), quit=True)
        except Exception as exc:
            reason = self.describe(exc)
            self._mark_down(reason)
            return reason
        return None

    def down(self) -> str | None:
        """Why the server is not tried now, or None."""
        with self._lock:
            if time.monotonic() < self._down_until:
                return self._down_reason
        return None

    def _mark_down(self, reason: str) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.settings.retry_after
            self._down_reason = f"{reason} (not tried again for {self.settings.retry_after:g} s)"

    def send(self, mails: list[tuple[EmailMessage, str]]) -> list[str | None]:
        """Send each mail to its one recipient. Returns, for each, None (sent) or why not."""
        if not mails:
            return []
        reason = self.down()
        if reason is not None:
            return [reason] * len(mails)
        try:
            smtp = self.open()
        except Exception as exc:
            reason = self.describe(exc)
            self._mark_down(reason)
            return [reason] * len(mails)
        out: list[str | None] = []
        try:
            for i, (msg, rcpt) in enumerate(mails):
                try:
                    assert self.settings.sender is not None
                    smtp.send_message(msg, from_addr=self.settings.sender, to_addrs=[rcpt])
                    out.append(None)
                except smtplib.SMTPRecipientsRefused as exc:
                    out.append(self.describe(exc))
                except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                    out.append(self.describe(exc))
                    smtp.rset()
                except SESSION_ERRORS as exc:
                    reason = self.describe(exc)
                    self._mark_down(reason)
                    out += [reason] * (len(mails) - i)
                    break
        except Exception as exc:  # rset on a broken session, or anything unforeseen
            reason = self.describe(exc)
            out += [reason] * (len(mails) - len(out))
        finally:
            _close(smtp, quit=True)
        return out


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _close(smtp: smtplib.SMTP, quit: bool = False) -> None:
    try:
        if quit:
            smtp.quit()
        else:
            smtp.close()
    except Exception:
        smtp.close()
