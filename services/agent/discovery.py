"""Discovery: find certificate files and key stores under given directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.agent.errors import JobError
from services.agent.keystores import JavaKeyStore, Pkcs12File
from services.agent.pemdir import PemDirectory, load_pems

PEM_SUFFIXES = (".crt", ".pem", ".cer")
PKCS12_SUFFIXES = (".p12", ".pfx")
JKS_SUFFIXES = (".jks", ".keystore")


def _shown(root: Path, path: Path) -> tuple[str, bool]:
    """A path relative to the agent root when inside it (manageable), else absolute."""
    base = root.resolve()
    try:
        return str(path.resolve().relative_to(base)) or ".", True
    except ValueError:
        return str(path.resolve()), False


def _count(store: Pkcs12File | JavaKeyStore) -> int | None:
    try:
        return len(store.entries())
    except (JobError, ValueError, OSError):
        return None


def discover(root: Path, paths: list[str], max_depth: int, password: str) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for given in paths:
        start = (root / given) if not Path(given).is_absolute() else Path(given)
        if not start.is_dir():
            continue
        base_depth = len(start.resolve().parts)
        for dirpath, dirnames, filenames in os.walk(start):
            here = Path(dirpath)
            if len(here.resolve().parts) - base_depth >= max_depth:
                dirnames[:] = []
            dirnames[:] = [d for d in dirnames if d != ".certbus"]
            pem_count = 0
            for name in sorted(filenames):
                path = here / name
                lower = name.lower()
                if lower.endswith(PEM_SUFFIXES) and not lower.endswith(".chain.pem"):
                    try:
                        pem_count += 1 if load_pems(path.read_bytes()) else 0
                    except (ValueError, OSError):
                        continue
                elif lower.endswith(PKCS12_SUFFIXES + JKS_SUFFIXES):
                    is_p12 = lower.endswith(PKCS12_SUFFIXES)
                    store = Pkcs12File(path, password) if is_p12 else JavaKeyStore(path, password)
                    shown, manageable = _shown(root, path)
                    kind = "pkcs12" if is_p12 else "jks"
                    entries = _count(store)
                    found[(kind, shown)] = {
                        "store_type": kind,
                        "store_path": shown,
                        "entries": entries,
                        "readable": entries is not None,
                        "manageable": manageable,
                    }
            if pem_count:
                shown, manageable = _shown(root, here)
                entries = len(PemDirectory(here).entries()) or pem_count
                found[("pem", shown)] = {
                    "store_type": "pem",
                    "store_path": shown,
                    "entries": entries,
                    "readable": True,
                    "manageable": manageable,
                }
    return [found[k] for k in sorted(found)]
