"""Certificate stores on the machine: each can create itself, list, add and remove entries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from services.agent import keys
from services.agent.entry import Entry
from services.agent.errors import JobError
from services.agent.keystores import JavaKeyStore, Pkcs12File
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


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_pems(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data) if b"-----BEGIN CERTIFICATE" in data else []


class PemDirectory:
    """A directory of ``<alias>.crt``, ``<alias>.key`` and ``<alias>.chain.pem`` files."""

    def __init__(
        self,
        path: Path,
        cert_suffix: str = ".crt",
        key_suffix: str = ".key",
        chain_suffix: str = ".chain.pem",
    ) -> None:
        self.path = path
        self.cert_suffix, self.key_suffix, self.chain_suffix = cert_suffix, key_suffix, chain_suffix

    def files(self, alias: str) -> tuple[Path, Path, Path]:
        if not alias or "/" in alias or alias.startswith("."):
            raise JobError("invalid_alias", f"alias {alias!r} cannot name a file")
        return (
            self.path / f"{alias}{self.cert_suffix}",
            self.path / f"{alias}{self.key_suffix}",
            self.path / f"{alias}{self.chain_suffix}",
        )

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def get(self, alias: str) -> Entry | None:
        cert_file, key_file, chain_file = self.files(alias)
        if not cert_file.exists():
            return None
        certs = load_pems(cert_file.read_bytes())
        if not certs:
            return None
        chain = load_pems(chain_file.read_bytes()) if chain_file.exists() else []
        return Entry(alias, certs[0], chain, key_file.exists())

    def entries(self) -> list[Entry]:
        if not self.exists():
            return []
        out = []
        for cert_file in sorted(self.path.glob(f"*{self.cert_suffix}")):
            entry = self.get(cert_file.name[: -len(self.cert_suffix)])
            if entry:
                out.append(entry)
        return out

    def add(
        self,
        alias: str,
        cert: x509.Certificate,
        key: PrivateKeyTypes | None,
        chain: list[x509.Certificate],
    ) -> None:
        cert_file, key_file, chain_file = self.files(alias)
        self.create()
        if key is not None:
            keys.write_private(key_file, keys.to_pem(key))
        _write_public(chain_file, "".join(pki.pem(c) for c in chain).encode())
        _write_public(cert_file, pki.pem(cert).encode())

    def remove(self, alias: str) -> bool:
        found = False
        for f in self.files(alias):
            if f.exists():
                f.unlink()
                found = True
        return found


def open_store(root: Path, target: StoreTarget, password: str = "changeit") -> Store:
    path = inside(root, target.store_path)
    extra = target.model_extra or {}
    if target.store_type == "pem":
        return PemDirectory(
            path,
            cert_suffix=extra.get("cert_suffix", ".crt"),
            key_suffix=extra.get("key_suffix", ".key"),
            chain_suffix=extra.get("chain_suffix", ".chain.pem"),
        )
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
