"""The certbus Python SDK: a thin, typed client over the gateway's Web API.

from services.cli.sdk import Certbus
with Certbus() as cb:
    cb.hr.onboard("alice", email="alice@example.com", devices=["alice-laptop"])
    for cert in cb.certs.list(owner="alice"):
        print(cert["serial"], cert["status"])
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class CertbusError(Exception):
    """The API answered with an error: ``code`` is stable, ``message`` is for people."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class _Area:
    def __init__(self, client: Certbus) -> None:
        self._c = client


class HR(_Area):
    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        return self._c.request("POST", "/v1/hr/events", json={"type": type_, **fields})

    def onboard(
        self,
        user: str,
        *,
        email: str | None = None,
        department: str | None = None,
        devices: list[str] | None = None,
        roles: list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return self.event(
            "user.onboarded",
            user=user,
            email=email,
            department=department,
            devices=devices or [],
            roles=roles or [],
            **extra,
        )

    def offboard(
        self, user: str, *, mode: str = "revoke", comment: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        return self.event("user.offboarded", user=user, mode=mode, comment=comment, **extra)

    def offboarding(self, user: str) -> dict[str, Any]:
        """Progress of a user's offboarding: found, revoked, removed, still pending."""
        return self._c.request("GET", f"/v1/hr/offboardings/{user}")


class Certs(_Area):
    def list(
        self,
        *,
        owner: str | None = None,
        query: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {
            k: v
            for k, v in {
                "owner": owner,
                "query": query,
                "status": status,
                "limit": limit,
                "offset": offset,
                "sort": sort,
            }.items()
            if v is not None
        }
        return self._c.request("GET", "/v1/certificates", params=params)["items"]

    def get(self, cert_id: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/certificates/{cert_id}")

    def search(
        self, query: str, *, limit: int = 100, offset: int = 0, sort: str | None = None
    ) -> dict[str, Any]:
        """One page of a search: ``{"items": [...], "total": n}``."""
        params = {
            k: v
            for k, v in {"query": query, "limit": limit, "offset": offset, "sort": sort}.items()
            if v is not None
        }
        return self._c.request("GET", "/v1/certificates", params=params)

    def search_all(
        self, query: str, *, page: int = 500, sort: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every certificate matching ``query``, fetched page by page."""
        offset = 0
        while True:
            batch = self.search(query, limit=page, offset=offset, sort=sort)
            yield from batch["items"]
            offset += len(batch["items"])
            if not batch["items"] or offset >= batch["total"]:
                return

    def history(self, cert_id: str) -> builtins.list[dict[str, Any]]:
        return self._c.request("GET", f"/v1/certificates/{cert_id}/history")["items"]

    def locations(self, cert_id: str) -> builtins.list[dict[str, Any]]:
        return self._c.request("GET", f"/v1/certificates/{cert_id}/locations")["items"]


class Cas(_Area):
    def list(self) -> list[dict[str, Any]]:
        return self._c.request("GET", "/v1/cas")["items"]

    def get(self, name: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/cas/{name}")

    def chain_pem(self, name: str) -> str:
        return bytes(self._c.request("GET", f"/v1/cas/{name}/chain")).decode()


class Templates(_Area):
    def list(self) -> list[dict[str, Any]]:
        return self._c.request("GET", "/v1/templates")["items"]

    def get(self, name: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/templates/{name}")


class Enroll(_Area):
    """Enrollment answers the issued certificate: id, serial, thumbprints, PEM, chain, validity."""

    def csr(
        self,
        template: str,
        csr: str | bytes,
        *,
        request_id: str | None = None,
        owner: str | None = None,
        metadata: dict[str, str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        text = csr.decode() if isinstance(csr, bytes) else csr
        body = {
            "template": template,
            "csr": text,
            "request_id": request_id,
            "owner": owner,
            "metadata": metadata or {},
            **extra,
        }
        return self._c.request("POST", "/v1/enrollment/csr", json=body)

    def pfx(
        self,
        template: str,
        subject: str,
        *,
        password: str,
        sans: list[str] | None = None,
        request_id: str | None = None,
        owner: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The answer's ``pkcs12_b64`` holds the key and chain, protected by ``password``."""
        body = {
            "template": template,
            "subject": subject,
            "sans": sans or [],
            "password": password,
            "request_id": request_id,
            "owner": owner,
            **extra,
        }
        return self._c.request("POST", "/v1/enrollment/pfx", json=body)

    def renew(
        self,
        cert_id: str,
        *,
        template: str | None = None,
        ca: str | None = None,
        csr: str | None = None,
        password: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "cert_id": cert_id,
            "template": template,
            "ca": ca,
            "csr": csr,
            "password": password,
            "request_id": request_id,
        }
        return self._c.request(
            "POST", "/v1/enrollment/renew", json={k: v for k, v in body.items() if v is not None}
        )


class Metadata(_Area):
    """Per-certificate metadata, its history, and the Compare access valve."""

    def get(self, cert_id: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/certificates/{cert_id}/metadata")["fields"]

    def set(
        self, cert_id: str, fields: dict[str, Any] | None = None, **more: Any
    ) -> dict[str, Any]:
        """Set fields (``None`` clears one); answers the certificate's fields after the change."""
        body = {"fields": {**(fields or {}), **more}}
        return self._c.request("PUT", f"/v1/certificates/{cert_id}/metadata", json=body)

    def history(self, cert_id: str) -> list[dict[str, Any]]:
        return self._c.request("GET", f"/v1/certificates/{cert_id}/metadata/history")["items"]

    def compare(
        self, expected: dict[str, Any], *, cert_id: str | None = None, thumbprint: str | None = None
    ) -> dict[str, Any]:
        """``{"match": bool, "differences": {field: {expected, actual}}}``."""
        body = {"cert_id": cert_id, "thumbprint": thumbprint, "expected": expected}
        return self._c.request("POST", "/v1/metadata/compare", json=body)

    def fields(self) -> list[dict[str, Any]]:
        return self._c.request("GET", "/v1/metadata/fields")["items"]

    def define(
        self,
        name: str,
        type_: str = "string",
        *,
        required: bool = False,
        default: Any = None,
        description: str = "",
    ) -> dict[str, Any]:
        body = {"type": type_, "required": required, "default": default, "description": description}
        return self._c.request("PUT", f"/v1/metadata/fields/{name}", json=body)


class Notifications(_Area):
    def deliveries(
        self,
        *,
        event_id: str | None = None,
        subject: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``{"items": [delivery], "total": n}``, newest first."""
        params = {
            k: v
            for k, v in {
                "event_id": event_id,
                "subject": subject,
                "status": status,
                "channel": channel,
                "limit": limit,
                "offset": offset,
            }.items()
            if v is not None
        }
        return self._c.request("GET", "/v1/notifications/deliveries", params=params)

    def subscriptions(self) -> list[dict[str, Any]]:
        return self._c.request("GET", "/v1/notifications/subscriptions")["items"]


class Revocation(_Area):
    """Revoke certificates (one, many, by query), lift holds, and ask a certificate's status."""

    def revoke(
        self,
        cert_id: str,
        *,
        reason: str | int = "unspecified",
        comment: str,
        effective_at: str | None = None,
        invalidity_date: str | None = None,
    ) -> dict[str, Any]:
        """Revoke one certificate (id, serial or thumbprint); revoking twice reports the first."""
        body = {
            "reason": reason,
            "comment": comment,
            "effective_at": effective_at,
            "invalidity_date": invalidity_date,
        }
        return self._c.request(
            "POST",
            f"/v1/certificates/{cert_id}/revoke",
            json={k: v for k, v in body.items() if v is not None},
        )

    def revoke_many(
        self,
        cert_ids: list[str] | None = None,
        *,
        query: str | None = None,
        reason: str | int = "unspecified",
        comment: str,
        dry_run: bool = False,
        effective_at: str | None = None,
        invalidity_date: str | None = None,
    ) -> dict[str, Any]:
        """``{"dry_run", "items": [{cert_id, status, ...}], "counts": {status: n}}``."""
        body = {
            "cert_ids": cert_ids,
            "query": query,
            "reason": reason,
            "comment": comment,
            "dry_run": dry_run,
            "effective_at": effective_at,
            "invalidity_date": invalidity_date,
        }
        return self._c.request(
            "POST", "/v1/certificates/revoke", json={k: v for k, v in body.items() if v is not None}
        )

    def revoke_query(self, query: str, **options: Any) -> dict[str, Any]:
        return self.revoke_many(query=query, **options)

    def release(self, cert_id: str, *, comment: str | None = None) -> dict[str, Any]:
        """Lift a certificateHold; any other reason is final (409 ``revocation_final``)."""
        body = {"comment": comment} if comment else {}
        return self._c.request("POST", f"/v1/certificates/{cert_id}/release", json=body)

    def status(self, cert_id: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/certificates/{cert_id}/revocation")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Identities(_Area):
    def users(
        self,
        *,
        status: str | None = None,
        department: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        params = _params(status=status, department=department, limit=limit, offset=offset)
        return self._c.request("GET", "/v1/users", params=params)["items"]

    def user(self, user: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/users/{user}")

    def devices(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        params = _params(limit=limit, offset=offset)
        return self._c.request("GET", "/v1/devices", params=params)["items"]

    def device(self, name: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/devices/{name}")


class Agents(_Area):
    def list(self, *, status: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        params = _params(status=status, state=state)
        return self._c.request("GET", "/v1/agents", params=params)["items"]

    def approve(self, machine: str) -> dict[str, Any]:
        return self._c.request("POST", f"/v1/agents/{machine}/approve")

    def reject(self, machine: str) -> dict[str, Any]:
        return self._c.request("POST", f"/v1/agents/{machine}/reject")

    def discover(
        self, machine: str, paths: builtins.list[str], *, max_depth: int | None = None
    ) -> dict[str, Any]:
        body = _params(paths=paths, max_depth=max_depth)
        return self._c.request("POST", f"/v1/agents/{machine}/discover", json=body)


class Stores(_Area):
    def list(
        self, *, machine: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        params = _params(machine=machine, status=status)
        return self._c.request("GET", "/v1/stores", params=params)["items"]

    def add(self, machine: str, store_path: str, *, store_type: str = "pem") -> dict[str, Any]:
        body = {"machine": machine, "store_path": store_path, "store_type": store_type}
        return self._c.request("POST", "/v1/stores", json=body)

    def find(self, machine: str, store_path: str) -> dict[str, Any] | None:
        return next((s for s in self.list(machine=machine) if s["store_path"] == store_path), None)

    def inventory(self, store_id: str) -> dict[str, Any]:
        return self._c.request("POST", f"/v1/stores/{store_id}/inventory")

    def approve(self, store_id: str) -> dict[str, Any]:
        return self._c.request("POST", f"/v1/stores/{store_id}/approve")

    def enroll(
        self,
        store_id: str,
        template: str,
        subject: str,
        *,
        sans: builtins.list[str] | None = None,
        alias: str | None = None,
        owner: str | None = None,
        key_type: str = "ec-p256",
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Issue into the store with the key made on its machine: ``{"request_id", "job"}``."""
        body = _params(
            template=template,
            subject=subject,
            sans=sans or [],
            alias=alias,
            owner=owner,
            key_type=key_type,
            request_id=request_id,
        )
        return self._c.request("POST", f"/v1/stores/{store_id}/enroll", json=body)


class Jobs(_Area):
    def list(
        self,
        *,
        machine: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        cert_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        params = _params(
            machine=machine, status=status, kind=kind, cert_id=cert_id, limit=limit, offset=offset
        )
        return self._c.request("GET", "/v1/jobs", params=params)["items"]

    def get(self, job_id: str) -> dict[str, Any]:
        return self._c.request("GET", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, *, timeout: float = 60.0, interval: float = 0.5) -> dict[str, Any]:
        """Poll until the agent reported the job done or failed (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] != "sent" or time.monotonic() > deadline:
                return job
            time.sleep(interval)


class Renewals(_Area):
    def start(
        self,
        query: str | None = None,
        *,
        cert_ids: list[str] | None = None,
        dry_run: bool = False,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Renew what ``query`` (or ``cert_ids``) selects wherever each is installed:
        ``{"planned", "skipped", "jobs_sent", ...}``; ``dry_run`` only plans."""
        body = _params(query=query, cert_ids=cert_ids, dry_run=dry_run, reason=reason)
        return self._c.request("POST", "/v1/renewals", json=body)

    def list(
        self,
        *,
        status: str | None = None,
        cert_id: str | None = None,
        machine: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``{"items": [...], "progress": {"installed": n, ...}}``."""
        params = _params(
            status=status, cert_id=cert_id, machine=machine, limit=limit, offset=offset
        )
        return self._c.request("GET", "/v1/renewals", params=params)


class Certbus:
    """Base URL from ``CERTBUS_URL`` (default http://127.0.0.1:8080)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url or os.environ.get("CERTBUS_URL", DEFAULT_URL),
            timeout=timeout,
            headers=headers,
            transport=transport,
        )
        self.hr = HR(self)
        self.certs = Certs(self)
        self.identities = Identities(self)
        self.agents = Agents(self)
        self.stores = Stores(self)
        self.jobs = Jobs(self)
        self.renewals = Renewals(self)
        self.revocation = Revocation(self)
        self.cas = Cas(self)
        self.templates = Templates(self)
        self.enroll = Enroll(self)
        self.metadata = Metadata(self)
        self.notifications = Notifications(self)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                err = response.json().get("error", {})
            except ValueError:
                err = {}
            raise CertbusError(
                response.status_code,
                err.get("code", "http_error"),
                err.get("message", response.text),
                err.get("details"),
            )
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def health(self) -> dict[str, Any]:
        response = self._http.get("/v1/health")
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Certbus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
