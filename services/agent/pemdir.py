"""A PEM directory: each entry a certificate, key and chain file, by default
``<alias>.crt``, ``<alias>.key`` and ``<alias>.chain.pem``, or under names the target gives."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from services.agent import keys
from services.agent.entry import Entry
from services.agent.errors import JobError
from shared import pki
from shared.events import PEM_FILE_FIELDS, StoreTarget, check_file_name


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_pems(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data) if b"-----BEGIN CERTIFICATE" in data else []


@dataclass(frozen=True)
class PemFiles:
    """The three files of one entry of a PEM directory."""

    cert: str
    key: str
    chain: str

    def paths(self, directory: Path) -> tuple[Path, Path, Path]:
        return directory / self.cert, directory / self.key, directory / self.chain


class NameBook:
    """Which files the agent wrote for entries not named ``<alias><suffix>``: kept in the
    agent's own directory, so a later removal or inventory, which names only the alias, finds
    them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, PemFiles]:
        if not self.path.exists():
            return {}
        return {
            alias: PemFiles(*names) for alias, names in json.loads(self.path.read_text()).items()
        }

    def write(self, alias: str, files: PemFiles | None) -> None:
        book = self.read()
        if files is None and alias not in book:
            return
        if files is None:
            del book[alias]
        else:
            book[alias] = files
        data = {a: [f.cert, f.key, f.chain] for a, f in sorted(book.items())}
        write_public(self.path, json.dumps(data, indent=1).encode())


class PemDirectory:
    """A directory of ``<alias>.crt``, ``<alias>.key`` and ``<alias>.chain.pem`` files, or of
    files named by the target (``named``) and remembered in the agent's ``book``."""

    def __init__(
        self,
        path: Path,
        cert_suffix: str = ".crt",
        key_suffix: str = ".key",
        chain_suffix: str = ".chain.pem",
        named: dict[str, PemFiles] | None = None,
        book: NameBook | None = None,
    ) -> None:
        self.path = path
        self.cert_suffix, self.key_suffix, self.chain_suffix = cert_suffix, key_suffix, chain_suffix
        self.named = named or {}
        self.book = book

    def suffixed(self, alias: str) -> PemFiles:
        if not alias or "/" in alias or alias.startswith("."):
            raise JobError("invalid_alias", f"alias {alias!r} cannot name a file")
        return PemFiles(
            f"{alias}{self.cert_suffix}", f"{alias}{self.key_suffix}", f"{alias}{self.chain_suffix}"
        )

    def _book(self) -> dict[str, PemFiles]:
        return self.book.read() if self.book else {}

    def names(self, alias: str) -> PemFiles:
        """The entry's files: as the target names them, as they were written, or suffixed."""
        return self.named.get(alias) or self._book().get(alias) or self.suffixed(alias)

    def files(self, alias: str) -> tuple[Path, Path, Path]:
        return self.names(alias).paths(self.path)

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def get(self, alias: str) -> Entry | None:
        return self._entry(alias, self.names(alias))

    def _entry(self, alias: str, files: PemFiles) -> Entry | None:
        cert_file, key_file, chain_file = files.paths(self.path)
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
        named = {**self._book(), **self.named}
        taken = {name for files in named.values() for name in (files.cert, files.key, files.chain)}
        every = dict(named)
        for cert_file in self.path.glob(f"*{self.cert_suffix}"):
            alias = cert_file.name[: -len(self.cert_suffix)]
            if cert_file.name not in taken and alias and not alias.startswith("."):
                every.setdefault(alias, self.suffixed(alias))
        found = (self._entry(alias, every[alias]) for alias in sorted(every))
        return [e for e in found if e]

    def add(
        self,
        alias: str,
        cert: x509.Certificate,
        key: PrivateKeyTypes | None,
        chain: list[x509.Certificate],
    ) -> None:
        files = self.names(alias)
        written = self._book().get(alias)
        if written is not None and written != files:
            self._unlink(written)  # the alias moves to other names: leave no stale copy behind
        cert_file, key_file, chain_file = files.paths(self.path)
        self.create()
        if key is not None:
            keys.write_private(key_file, keys.to_pem(key))
        write_public(chain_file, "".join(pki.pem(c) for c in chain).encode())
        write_public(cert_file, pki.pem(cert).encode())
        if self.book:
            self.book.write(alias, None if files == self.suffixed(alias) else files)

    def remove(self, alias: str) -> bool:
        found = self._unlink(self.names(alias))
        if self.book:
            self.book.write(alias, None)
        return found

    def _unlink(self, files: PemFiles) -> bool:
        found = False
        for f in files.paths(self.path):
            if f.exists():
                f.unlink()
                found = True
        return found


def pem_files(target: StoreTarget, suffixed: PemFiles) -> dict[str, PemFiles]:
    """The file names a target gives its alias, checked to be plain names in the directory."""
    extra = target.model_extra or {}
    if not any(extra.get(f) for f in PEM_FILE_FIELDS):
        return {}
    defaults = (suffixed.cert, suffixed.key, suffixed.chain)
    given = [str(extra.get(f) or d) for f, d in zip(PEM_FILE_FIELDS, defaults, strict=True)]
    for field_name, name in zip(PEM_FILE_FIELDS, given, strict=True):
        try:
            check_file_name(name)
        except ValueError as exc:
            raise JobError("invalid_file_name", f"{field_name}: {exc}") from exc
    if len(set(given)) < len(given):
        raise JobError(
            "invalid_file_name", f"cert_file, key_file and chain_file must differ: {given}"
        )
    return {target.alias: PemFiles(*given)}


def book_path(root: Path, store: Path) -> Path:
    """Where the agent keeps the names it wrote in the store directory ``store``."""
    relative = str(store.relative_to(root.resolve()))
    return root / ".certbus" / "pem-names" / f"{hashlib.sha256(relative.encode()).hexdigest()}.json"
