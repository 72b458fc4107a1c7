"""Where notifications go: each channel is a small object with a stable name and ``send``.

A channel raises ``TransientFailure`` for what may work later (network errors, 5xx, 429) and
``PermanentFailure`` for what never will (a 4xx answer); the caller decides about retries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiosmtplib
import httpx


@dataclass(frozen=True)
class Notification:
    subject: str
    event_id: str
    correlation_id: str
    event: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"subject": self.subject, "event": self.event}


class TransientFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


class Channel(Protocol):
    name: str

    async def send(self, notification: Notification) -> None: ...


def webhook_name(url: str) -> str:
    """A stable name that does not reveal the URL: webhook URLs often embed a secret."""
    host = urlsplit(url).hostname or "webhook"
    port = urlsplit(url).port
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return f"webhook:{host}{f':{port}' if port else ''}:{digest}"


class WebhookChannel:
    """POSTs ``{"subject", "event"}`` with the event id as ``Idempotency-Key``."""

    def __init__(self, url: str, client: httpx.AsyncClient, name: str | None = None) -> None:
        self.url = url
        self.name = f"webhook:{name}" if name else webhook_name(url)
        self._client = client

    async def send(self, notification: Notification) -> None:
        headers = {
            "Idempotency-Key": notification.event_id,
            "X-Certbus-Subject": notification.subject,
            "X-Certbus-Correlation-Id": notification.correlation_id,
        }
        try:
            response = await self._client.post(self.url, json=notification.body(), headers=headers)
        except httpx.HTTPError as exc:
            raise TransientFailure(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = f"HTTP {status}: {response.text[:200]}"
        if status in (408, 425, 429) or status >= 500:
            raise TransientFailure(reason)
        raise PermanentFailure(reason)


class EmailChannel:
    """Sends one plain-text message per event to a fixed list of recipients."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.name = f"email:{name}" if name else f"email:{host}:{port}"
        self._host, self._port = host, port
        self._sender, self._recipients = sender, recipients
        self._starttls, self._username, self._password = starttls, username, password
        self._timeout = timeout

    def message(self, notification: Notification) -> EmailMessage:
        event = notification.event
        about = event.get("subject_dn") or event.get("user") or event.get("cert_id") or ""
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Subject"] = f"[certbus] {notification.subject} {about}".strip()
        msg["Message-ID"] = f"<{notification.event_id}@certbus>"
        msg["X-Certbus-Subject"] = notification.subject
        msg["X-Certbus-Correlation-Id"] = notification.correlation_id
        msg.set_content(json.dumps(notification.body(), indent=2, sort_keys=True, default=str))
        return msg

    async def send(self, notification: Notification) -> None:
        try:
            await aiosmtplib.send(
                self.message(notification),
                hostname=self._host,
                port=self._port,
                start_tls=self._starttls,
                username=self._username,
                password=self._password,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"SMTP {exc.code}: {exc.message}") from exc
            raise TransientFailure(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientFailure(f"{type(exc).__name__}: {exc}") from exc
