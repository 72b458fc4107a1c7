"""What the agent does with each job; returns the events to publish (no messaging here).

Every event id is derived from the job id, so a redelivered job publishes nothing new. A result
too large for one message is reported in parts, each well under the bus's limit. Every failure
is answered with ``agent.job.failed``, the unexpected ones too (``internal_error``): a job that
failed once fails again, so only ``RetryLater`` leaves a job unanswered, to be delivered again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from services.agent import keys
from services.agent.discovery import discover
from services.agent.errors import JobError, RetryLater, unexpected
from services.agent.stores import Store, describe, open_store
from shared import job_results, pki
from shared.events import (
    AgentJob,
    AgentJobCompleted,
    AgentJobFailed,
    CertInstalled,
    CertRemoved,
    CertRequested,
    Event,
    JobKind,
    StoreTarget,
    derived_id,
)

log = logging.getLogger("certbus.agent")

E = TypeVar("E", bound=Event)

# Runs after an install; what it returns is the job result's ``post_install``.
Hook = Callable[[AgentJob, Path], dict[str, Any] | None]
# Asks the issuer to make the key and certificate (``enroll.pfx``); raises JobError on refusal,
# RetryLater when the issuer does not answer.
ServerEnroll = Callable[[dict[str, Any]], dict[str, Any]]
# The largest message the bus takes now (the connection's ``max_payload``).
PayloadLimit = Callable[[], int]

SERVER_KEYS = "server"


class Worker:
    def __init__(
        self,
        machine: str,
        root: Path,
        after_install: Hook | None = None,
        store_password: str = "changeit",
        server_enroll: ServerEnroll | None = None,
        max_payload: PayloadLimit = lambda: job_results.DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.machine = machine
        self.root = root
        self.after_install = after_install
        self.store_password = store_password
        self.server_enroll = server_enroll
        self.max_payload = max_payload

    def store(self, target: StoreTarget) -> Store:
        return open_store(self.root, target, self.store_password)

    def run(self, job: AgentJob) -> list[Event]:
        """The events that report the job's outcome, failure included."""
        handler = {
            JobKind.REENROLL: self.reenroll,
            JobKind.ADD: self.add,
            JobKind.REMOVE: self.remove,
            JobKind.INVENTORY: self.inventory,
            JobKind.CREATE: self.create,
            JobKind.DISCOVER: self.discover,
        }.get(job.kind)
        try:
            if handler is None:
                raise JobError("unsupported_job", f"this agent cannot run {job.kind.value} jobs")
            events, result = handler(job)
        except RetryLater:
            raise
        except JobError as exc:
            log.warning("job %s (%s) failed: %s", job.job_id, job.kind.value, exc.message)
            return [self._failed(job, exc)]
        except OSError as exc:
            log.warning("job %s (%s) failed: %s", job.job_id, job.kind.value, exc)
            return [self._failed(job, JobError("io_error", str(exc)))]
        except Exception as exc:  # noqa: BLE001 - reported, never retried: it would fail again
            failure = unexpected(exc)
            log.exception("job %s (%s) failed: %s", job.job_id, job.kind.value, failure.message)
            return [self._failed(job, failure)]
        return [*events, *self._completed(job, result)]

    def _failed(self, job: AgentJob, exc: JobError) -> AgentJobFailed:
        return self._event(job, AgentJobFailed, kind=job.kind, error=exc.message, code=exc.code)

    def _completed(self, job: AgentJob, result: dict[str, Any]) -> list[Event]:
        """The job's result: in parts when one message cannot carry it."""
        completed = self._event(job, AgentJobCompleted, kind=job.kind, result=result)
        try:
            return list(job_results.split(completed, job_results.part_budget(self.max_payload())))
        except job_results.ResultTooLarge as exc:
            log.warning("job %s (%s) cannot be reported: %s", job.job_id, job.kind.value, exc)
            return [self._failed(job, JobError("result_too_large", str(exc)))]

    def _event(self, job: AgentJob, cls: type[E], **fields: Any) -> E:
        if "machine" in cls.model_fields:
            fields.setdefault("machine", self.machine)
        return job.caused(
            cls, event_id=derived_id(job.job_id, cls.subject), job_id=job.job_id, **fields
        )

    def _after_install(self, job: AgentJob, store_path: Path) -> dict[str, Any]:
        """Run the configured command; the certificate is installed whatever it does, so its
        outcome goes into the result and never fails the job."""
        if self.after_install is None:
            return {}
        try:
            outcome = self.after_install(job, store_path)
        except Exception as exc:  # noqa: BLE001 - the install stands; the result says what failed
            log.exception("job %s: the post-install command failed", job.job_id)
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        return {} if outcome is None else {"post_install": outcome}

    def _target(self, job: AgentJob) -> StoreTarget:
        if job.target is None:
            raise JobError("missing_target", f"a {job.kind.value} job needs a target store")
        return job.target

    def reenroll(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """Make (or reuse) the key on this machine and send a CSR for it."""
        if not job.request_id or not job.template or not job.subject_dn:
            raise JobError(
                "invalid_job", "a reenroll job needs request_id, template and subject_dn"
            )
        if job.payload.get("key_generation") == SERVER_KEYS:
            return self._reenroll_with_server_key(job)
        key = keys.pending_key(self.root, job.request_id, job.key_type)
        csr = keys.build_csr(key, job.subject_dn, job.sans)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        requested = self._event(
            job, CertRequested, request_id=job.request_id, template=job.template,
            csr_pem=csr_pem, owner=job.owner, device=self.machine, target=job.target,
            renewal_of=job.renewal_of,
        )  # fmt: skip
        return [requested], {
            "request_id": job.request_id,
            "public_key_sha256": hashlib.sha256(keys.public_der(key)).hexdigest(),
        }

    def _reenroll_with_server_key(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """The policy says the server makes the key: fetch a PKCS#12 over request/reply (never
        an event), protected by a one-time password, and install it straight away."""
        target = self._target(job)
        if self.server_enroll is None:
            raise JobError("server_keys_unavailable", "this agent cannot reach the issuer")
        store = self.store(target)
        password = secrets.token_urlsafe(24)
        answer = self.server_enroll({
            "template": job.template, "subject": job.subject_dn, "sans": list(job.sans),
            "password": password, "request_id": job.request_id, "owner": job.owner,
            "device": self.machine, "actor": f"agent:{self.machine}",
        })  # fmt: skip
        serial = str(answer.get("serial", "")).lower()
        current = store.get(target.alias)
        already = current is not None and current.serial == serial
        hooked: dict[str, Any] = {}
        if not already:
            if not answer.get("pkcs12_b64"):
                raise JobError(
                    "key_lost",
                    f"request {job.request_id} was issued before but its server-made key was "
                    "never kept; re-provision the device to get a new one",
                )
            try:
                key, cert, chain = pkcs12.load_key_and_certificates(
                    base64.b64decode(answer["pkcs12_b64"]), password.encode()
                )
            except ValueError as exc:
                raise JobError("bad_pkcs12", f"the issuer's PKCS#12 cannot be read: {exc}") from exc
            if key is None or cert is None:
                raise JobError("bad_pkcs12", "the issuer's PKCS#12 holds no key or certificate")
            store.add(target.alias, cert, key, list(chain))
            hooked = self._after_install(job, store.path)
        installed = self._event(
            job, CertInstalled, cert_id=answer.get("cert_id") or serial, serial=serial,
            thumbprint_sha256=answer.get("thumbprint_sha256") or "", target=target,
        )  # fmt: skip
        return [installed], {
            "serial": serial,
            "key_generation": SERVER_KEYS,
            "already_installed": already,
            "path": str(store.path),
            **hooked,
        }

    def add(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """Install the certificate with the key that waits for it."""
        target = self._target(job)
        if not job.certificate_pem:
            raise JobError("invalid_job", "an add job needs certificate_pem")
        cert = _certificate(job.certificate_pem, "certificate_pem")
        chain = [_certificate(c, f"chain_pem[{i}]") for i, c in enumerate(job.chain_pem)]
        serial = pki.render_serial(cert.serial_number)
        store = self.store(target)
        current = store.get(target.alias)
        already = current is not None and current.serial == serial
        hooked: dict[str, Any] = {}
        if not already:
            key_path = keys.pending_path(self.root, job.request_id or "")
            if not job.request_id or not key_path.exists():
                raise JobError(
                    "key_missing",
                    f"no private key waits for request {job.request_id!r} on {self.machine} "
                    f"({key_path}); the key is made here by the reenroll job and never sent",
                )
            key = keys.load(key_path)
            if not keys.matches(key, cert):
                raise JobError("key_mismatch", f"certificate {serial} is not for the pending key")
            store.add(target.alias, cert, key, chain)
            key_path.unlink()
            hooked = self._after_install(job, store.path)
        installed = self._event(
            job, CertInstalled, cert_id=job.cert_id or serial, serial=serial,
            thumbprint_sha256=pki.thumbprint(cert), target=target,
        )  # fmt: skip
        return [installed], {
            "serial": serial,
            "path": str(store.path),
            "already_installed": already,
            **hooked,
        }

    def remove(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """Delete the certificate from the store if that store holds that very certificate."""
        target = self._target(job)
        store = self.store(target)
        current = store.get(target.alias)
        serial = (job.serial or "").lower()
        found = current is not None and (not serial or current.serial == serial)
        if found:
            store.remove(target.alias)
        removed = self._event(
            job, CertRemoved, cert_id=job.cert_id or serial, serial=serial or "", target=target,
            found=found,
        )  # fmt: skip
        return [removed], {"found": found, "serial": serial}

    def inventory(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """Report everything the store holds."""
        target = self._target(job)
        store = self.store(target)
        if not store.exists():
            raise JobError("store_missing", f"no store at {store.path}")
        return [], {"store": target.model_dump(), "entries": [describe(e) for e in store.entries()]}

    def create(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """Create the store if it does not exist yet."""
        store = self.store(self._target(job))
        existed = store.exists()
        store.create()
        return [], {"created": not existed, "path": str(store.path)}

    def discover(self, job: AgentJob) -> tuple[list[Event], dict[str, Any]]:
        """Scan directories for certificate files and key stores."""
        paths = [str(p) for p in job.payload.get("paths") or ["."]]
        depth = int(job.payload.get("max_depth", 6))
        found = discover(self.root, paths, depth, self.store_password)
        return [], {"stores": found}


def _certificate(text: str, field: str) -> x509.Certificate:
    try:
        return pki.load_certificate(text)
    except ValueError as exc:
        raise JobError("invalid_certificate", f"{field} is not a certificate: {exc}") from exc
