"""Certificate stores on the machine: each can create itself, list, add and remove entries."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from services.agent.entry import Entry
from services.agent.errors import JobError
from services.agent.keystores import JavaKeyStore, Pkcs12File
from services.agent.pemdir import NameBook, PemDirectory, book_path, pem_files
from shared import pki
from shared.events import StoreTarget


class Store(Protocol):
    path: Path

    def exists(self) -> bool: ...
    def create(self) -> None: ...
    def entries(self) -> list[Entry]: ...
    def get(self, alias: str) -> Entry | None: ...
    def add(
        self,
        alias: str,
        cert: x509.Certificate,
        key: PrivateKeyTypes | None,
        chain: list[x509.Certificate],
    ) -> None: ...
    def remove(self, alias: str) -> bool: ...


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that escape the agent's root."""
    base = root.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise JobError("path_outside_root", f"store path {relative!r} leaves the agent root")
    return path


def open_store(root: Path, target: StoreTarget, password: str = "changeit") -> Store:
    path = inside(root, target.store_path)
    extra = target.model_extra or {}
    if target.store_type == "pem":
        store = PemDirectory(
            path,
            cert_suffix=extra.get("cert_suffix", ".crt"),
            key_suffix=extra.get("key_suffix", ".key"),
            chain_suffix=extra.get("chain_suffix", ".chain.pem"),
            book=NameBook(book_path(root, path)),
        )
        if target.alias != "-":
            store.named = pem_files(target, store.suffixed(target.alias))
        return store
    if target.store_type == "pkcs12":
        return Pkcs12File(path, password)
    if target.store_type == "jks":
        return JavaKeyStore(path, password)
    raise JobError("unsupported_store", f"store type {target.store_type!r} is not supported")


def describe(entry: Entry) -> dict[str, object]:
    """An entry as an inventory report carries it (public data only)."""
    cert = entry.certificate
    return {
        "alias": entry.alias,
        "serial": entry.serial,
        "thumbprint_sha256": pki.thumbprint(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "has_key": entry.has_key,
        "certificate_pem": pki.pem(cert),
    }
