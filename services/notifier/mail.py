"""The email channel: renders each notification from its event and delivers it by SMTP, one connection
for a whole batch, or into ``.eml`` files (``MAIL_URL``, contract.md "Notifier").

``MAIL_URL`` forms:
- ``smtp://[user:password@]host[:port][?starttls=true]`` (port 25 by default; STARTTLS is required when
  asked for, and the login happens only after it);
- ``smtps://[user:password@]host[:port]`` (TLS from the first byte, port 465 by default);
- ``file:///absolute/dir`` (``file://relative/dir`` is relative to the working directory): one
  ``<notification id>.eml`` per message, so a resend overwrites its file and never adds a second one.
Unset, it is ``file://<var>/mail``. ``MAIL_FROM`` is the sender and the invitations' organizer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from services.notifier.domain import recipient_role
from services.notifier.models import Notification
from services.notifier.rendering import RenderedEmail, render_email
from services.notifier.senders import Outcome

log = logging.getLogger(__name__)

DEFAULT_MAIL_FROM = "refstd 计量院通知 <noreply@refstd.example>"
#: Right-hand side of every Message-ID: ``<notification id>@refstd``.
MESSAGE_ID_DOMAIN = "refstd"
DEFAULT_TIMEOUT = 30.0
#: A connection idle longer than this is closed before the next batch rather than found dead mid-send
#: (servers drop idle clients after a few minutes; RFC 5321 lets them after 5).
IDLE_TIMEOUT = 60.0
_TRUE = {"1", "true", "yes", "on"}


# -- settings -------------------------------------------------------------------------------------

def _setting(settings, attribute: str, variable: str) -> str | None:
    value = getattr(settings, attribute, None) if settings is not None else None
    if not value:
        value = os.environ.get(variable)
    return value.strip() if value and value.strip() else None


def default_mail_url() -> str:
    from shared.config import VAR_DIR

    return Path(VAR_DIR, "mail").resolve().as_uri()


def configured_mail_url(settings=None) -> str:
    """MAIL_URL: ``settings.mail_url`` if the settings have it, else the environment, else ``file://<var>/mail``."""
    return _setting(settings, "mail_url", "MAIL_URL") or default_mail_url()


def configured_mail_from(settings=None) -> str:
    """MAIL_FROM: ``settings.mail_from`` if the settings have it, else the environment, else the default."""
    return _setting(settings, "mail_from", "MAIL_FROM") or DEFAULT_MAIL_FROM


@dataclass(frozen=True)
class MailTransport:
    """A parsed MAIL_URL."""

    scheme: str  # smtp | smtps | file
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    directory: Path | None = None

    def __repr__(self) -> str:  # never show the password
        if self.scheme == "file":
            return f"MailTransport(file://{self.directory})"
        user = f"{self.username}:***@" if self.username else ""
        return f"MailTransport({self.scheme}://{user}{self.host}:{self.port}, starttls={self.starttls})"


def parse_mail_url(url: str) -> MailTransport:
    """Raises ValueError for a URL this module cannot deliver through."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "file":
        # file:///abs/dir, file://localhost/abs/dir; file://var/mail is read as the relative path var/mail.
        netloc = "" if parts.netloc in ("", "localhost") else parts.netloc
        path = unquote(netloc + parts.path)
        if not path:
            raise ValueError("MAIL_URL file:// needs a directory")
        return MailTransport("file", directory=Path(path))
    if scheme not in ("smtp", "smtps"):
        raise ValueError(f"MAIL_URL scheme must be smtp, smtps or file, not {parts.scheme!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MAIL_URL has a bad port: {exc}") from None
    query = {key.lower(): values[-1] for key, values in parse_qs(parts.query).items()}
    starttls = query.get("starttls", "false").strip().lower() in _TRUE
    if scheme == "smtps" and starttls:
        raise ValueError("MAIL_URL smtps:// is TLS already; starttls applies to smtp:// only")
    return MailTransport(
        scheme, host=parts.hostname or "localhost", port=port or (465 if scheme == "smtps" else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        starttls=starttls,
    )


# -- the message ----------------------------------------------------------------------------------

def message_id(notification_id: str) -> str:
    """The Message-ID of a notification's email: the same on every resend, so receivers can deduplicate."""
    return f"<{notification_id}@{MESSAGE_ID_DOMAIN}>"


def _address(value: str) -> Address:
    name, address = parseaddr(value)
    if not address or "@" not in address:
        raise ValueError(f"not an email address: {value!r}")
    return Address(display_name=name, addr_spec=address)


def build_message(notification: Notification, rendered: RenderedEmail, sender: str,
                  now: dt.datetime | None = None) -> EmailMessage:
    """multipart/alternative (text, HTML and, for bookings, the text/calendar invitation), plus the
    invitation again as an ``invite.ics`` attachment for clients that ignore the inline part."""
    message = EmailMessage()
    message["From"] = _address(sender)
    message["To"] = Address(display_name=(notification.recipient_name or "").strip(),
                            addr_spec=notification.recipient.strip())
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    message["Message-ID"] = message_id(notification.id)
    # RFC 3834: automatic mail; autoresponders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Refstd-Notification-Id"] = notification.id
    event = notification.event or {}
    if event.get("type"):
        message["X-Refstd-Event-Type"] = event["type"]
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    if rendered.calendar is not None:
        message.add_alternative(rendered.calendar.decode("utf-8"), subtype="calendar", charset="utf-8",
                                cte="base64", params={"method": rendered.calendar_method})
        message.add_attachment(rendered.calendar, maintype="application", subtype="ics", filename="invite.ics")
    # Set last: building the body moves Content-* headers into the first part.
    message["Content-Language"] = rendered.locale
    return message


# -- transports -----------------------------------------------------------------------------------

def _reply_outcome(code: int | None, text: str, *, started: float, stage: str) -> Outcome:
    """An SMTP refusal: 5xx is permanent (retrying cannot help), anything else may pass later."""
    permanent = code is not None and 500 <= code < 600
    return Outcome(ok=False, error=f"SMTP {code} {text} ({stage})".strip(), status_code=code,
                   retryable=not permanent, duration_ms=_ms(started))


def _reply_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:500]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class _SmtpTransport:
    """One SMTP connection, opened on first use and kept for the batch (and the next, while fresh)."""

    def __init__(self, config: MailTransport, timeout: float, ssl_context: ssl.SSLContext | None,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.clock = clock
        self.connections = 0  # opened so far (for tests and logs)
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0
        self._down: Outcome | None = None
        self._helo: str | None = None

    def begin_batch(self) -> None:
        self._down = None
        if self._smtp is not None and self.clock() - self._last_used > IDLE_TIMEOUT:
            self.close()

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def _open(self) -> smtplib.SMTP:
        config = self.config
        if self._helo is None:  # what smtplib would send, looked up once rather than per connection
            self._helo = socket.getfqdn() or "localhost"
        local_hostname = self._helo
        if config.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(config.host, config.port, local_hostname=local_hostname, timeout=self.timeout,
                                    context=self._context())
        else:
            smtp = smtplib.SMTP(config.host, config.port, local_hostname=local_hostname, timeout=self.timeout)
        try:
            smtp.ehlo()
            if config.starttls:
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password or "")
        except BaseException:
            smtp.close()
            raise
        self.connections += 1
        return smtp

    def discard(self) -> None:
        """Forget a connection that failed (no QUIT: it may not answer)."""
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
        self._smtp = None

    def deliver(self, message: EmailMessage, sender: str, recipient: str, name: str) -> Outcome:
        started = time.monotonic()
        if self._down is not None:  # the server could not be reached a moment ago in this batch
            return Outcome(ok=False, error=self._down.error, status_code=self._down.status_code,
                           retryable=True, duration_ms=0)
        for attempt in (1, 2):
            reused = self._smtp is not None
            if self._smtp is None:
                try:
                    self._smtp = self._open()
                except smtplib.SMTPAuthenticationError as exc:
                    self._down = Outcome(ok=False, error=f"SMTP authentication failed: {exc.smtp_code} "
                                         f"{_reply_text(exc.smtp_error)}", status_code=exc.smtp_code,
                                         retryable=True, duration_ms=_ms(started))
                    return self._down
                except (OSError, smtplib.SMTPException) as exc:
                    self._down = Outcome(ok=False, error=f"SMTP connection to {self.config.host}:{self.config.port} "
                                         f"failed: {type(exc).__name__}: {_reply_text(exc)}",
                                         status_code=getattr(exc, "smtp_code", None), retryable=True,
                                         duration_ms=_ms(started))
                    return self._down
            smtp = self._smtp
            try:
                smtp.send_message(message, from_addr=sender, to_addrs=[recipient])
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()), (None, b""))
                self._after_refusal(code)
                return _reply_outcome(code, _reply_text(text), started=started, stage="RCPT TO")
            except smtplib.SMTPSenderRefused as exc:
                self._after_refusal(exc.smtp_code)
                return _reply_outcome(exc.smtp_code, _reply_text(exc.smtp_error), started=started, stage="MAIL FROM")
            except smtplib.SMTPDataError as exc:
                self._after_refusal(exc.smtp_code)
                return _reply_outcome(exc.smtp_code, _reply_text(exc.smtp_error), started=started, stage="DATA")
            except smtplib.SMTPNotSupportedError as exc:  # e.g. a non-ASCII address without SMTPUTF8
                return Outcome(ok=False, error=f"SMTP: {exc}", retryable=False, duration_ms=_ms(started))
            except smtplib.SMTPResponseException as exc:
                self._after_refusal(exc.smtp_code)
                return _reply_outcome(exc.smtp_code, _reply_text(exc.smtp_error), started=started, stage="SMTP")
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.discard()
                # A kept connection the server has since closed: open a new one, once. Not after a
                # timeout: the server may be slow rather than gone, and may have taken the message.
                if reused and attempt == 1 and not isinstance(exc, TimeoutError):
                    log.info("SMTP connection lost (%s): reconnecting once", exc)
                    continue
                return Outcome(ok=False, error=f"SMTP connection lost: {type(exc).__name__}: {_reply_text(exc)}",
                               retryable=True, duration_ms=_ms(started))
            self._last_used = self.clock()
            return Outcome(ok=True, status_code=250, duration_ms=_ms(started))
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_refusal(self, code: int | None) -> None:
        # 421: the server is closing the connection; anything else leaves it usable (smtplib sent RSET).
        if code == 421:
            self.discard()
        else:
            self._last_used = self.clock()

    def close(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            self.discard()


class _FileTransport:
    """Writes ``<notification id>.eml`` into a directory (the default for ``make run``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def begin_batch(self) -> None:
        pass

    def deliver(self, message: EmailMessage, sender: str, recipient: str, name: str) -> Outcome:
        started = time.monotonic()
        target = self.directory / f"{_safe_name(name)}.eml"
        temporary = self.directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(message.as_bytes())
            os.replace(temporary, target)  # a reader never sees half a message; a resend replaces it
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            return Outcome(ok=False, error=f"cannot write {target}: {exc}", retryable=True, duration_ms=_ms(started))
        return Outcome(ok=True, duration_ms=_ms(started))

    def discard(self) -> None:
        pass

    def close(self) -> None:
        pass


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned[:200] or "message"


# -- the sender -----------------------------------------------------------------------------------

class EmailSender:
    """The ``email`` channel's Sender (services/notifier/senders.py). Not thread-safe: one per dispatcher."""

    channel = "email"

    def __init__(self, mail_url: str | None = None, mail_from: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mail_url = mail_url or configured_mail_url()
        self.mail_from = mail_from or configured_mail_from()
        self.envelope_from = _address(self.mail_from).addr_spec  # fails at start on a bad MAIL_FROM
        self.config = parse_mail_url(self.mail_url)
        if self.config.scheme == "file":
            self._transport: _SmtpTransport | _FileTransport = _FileTransport(self.config.directory)
        else:
            self._transport = _SmtpTransport(self.config, timeout, ssl_context, clock)

    @classmethod
    def from_settings(cls, settings, **kwargs) -> EmailSender:
        return cls(configured_mail_url(settings), configured_mail_from(settings), **kwargs)

    @property
    def connections_opened(self) -> int:
        return getattr(self._transport, "connections", 0)

    def send(self, notifications: list[Notification]) -> list[Outcome]:
        return [outcome for _, outcome in self.send_each(notifications)]

    def send_each(self, notifications: list[Notification]) -> Iterator[tuple[int, Outcome]]:
        """One after another on one connection, yielding ``(index, outcome)`` as each is done."""
        self._transport.begin_batch()
        for index, notification in enumerate(notifications):
            yield index, self._send_one(notification)

    def _send_one(self, notification: Notification) -> Outcome:
        started = time.monotonic()
        try:
            if not notification.id:
                raise ValueError("a notification without an id (its Message-ID and file name)")
            event = notification.event
            rendered = render_email(event, notification.locale, recipient_name=notification.recipient_name,
                                    role=recipient_role(event, notification.recipient),
                                    recipient=notification.recipient, organizer=self.mail_from)
            message = build_message(notification, rendered, self.mail_from)
            if not notification.subject:
                notification.subject = rendered.subject  # the dispatcher records it on the row
            recipient = message["To"].addresses[0].addr_spec
        except Exception as exc:  # a bad event, template or address: sending it again cannot help
            log.warning("email %s cannot be built: %s", notification.id, exc, exc_info=True)
            return Outcome(ok=False, error=f"cannot build the email: {type(exc).__name__}: {exc}"[:1000],
                           retryable=False, duration_ms=_ms(started))
        try:
            return self._transport.deliver(message, self.envelope_from, recipient, str(notification.id))
        except Exception as exc:  # never let one notification stop the batch
            log.exception("email %s: unexpected delivery error", notification.id)
            self._transport.discard()
            return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:1000], retryable=True,
                           duration_ms=_ms(started))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> EmailSender:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
