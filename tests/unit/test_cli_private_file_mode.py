"""The CLI writes a server-made PKCS#12 (it holds a private key) with mode 0600, also over a
file that already exists with looser permissions."""

from __future__ import annotations

import stat
from pathlib import Path

from services.cli.commands_enroll import _write_private


def test_an_existing_world_readable_file_becomes_0600(tmp_path: Path) -> None:
    out = tmp_path / "www.p12"
    out.write_bytes(b"old")
    out.chmod(0o644)
    _write_private(out, b"pkcs12 bytes")
    assert out.read_bytes() == b"pkcs12 bytes"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_new_file_is_0600(tmp_path: Path) -> None:
    out = tmp_path / "new.p12"
    _write_private(out, b"x")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
