from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "enroll"
app = typer.Typer(no_args_is_help=True, help="Enroll certificates: CSR, server-made PFX, renewal.")


def _summary(cert: dict[str, Any], wrote: Path | None) -> None:
    for key in (
        "id",
        "serial",
        "subject_dn",
        "issuer_ca",
        "template",
        "not_before",
        "not_after",
        "thumbprint_sha256",
    ):
        output.console.print(f"[bold]{key:>18}[/bold]  {output.esc(cert.get(key))}")
    if wrote:
        output.console.print(f"{'written':>18}  {wrote}")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode given to open() applies only to a file it creates
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@app.command()
def csr(
    template: str = typer.Option(..., "--template", "-t"),
    csr_file: Path = typer.Option(..., "--csr", exists=True, dir_okay=False, help="PEM or DER CSR"),
    out: Path = typer.Option(None, "--out", help="Write the certificate and chain (PEM) here"),
    owner: str = typer.Option(None, "--owner"),
    request_id: str = typer.Option(None, "--request-id", help="Repeat to get the same certificate"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Issue a certificate for a CSR made elsewhere."""
    data = csr_file.read_bytes()
    text = data.decode() if b"-----BEGIN" in data else base64.b64encode(data).decode()
    with output.api_errors():
        cert = Certbus().enroll.csr(template, text, owner=owner, request_id=request_id)
    if out:
        out.write_text(cert["certificate_pem"] + "".join(cert.get("chain_pem") or []))
    output.emit_json(cert) if json_ else _summary(cert, out)


@app.command()
def pfx(
    template: str = typer.Option(..., "--template", "-t"),
    subject: str = typer.Option(..., "--subject", help='e.g. "CN=www.example.com"'),
    san: list[str] = typer.Option([], "--san", help="dns:NAME or email:ADDR; repeat for more"),
    password: str = typer.Option(..., "--password", help="Protects the PKCS#12"),
    out: Path = typer.Option(..., "--out", help="Where to write the PKCS#12 (mode 0600)"),
    owner: str = typer.Option(None, "--owner"),
    request_id: str = typer.Option(None, "--request-id"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Have the server make the key and return it with the certificate as PKCS#12."""
    with output.api_errors():
        cert = Certbus().enroll.pfx(
            template, subject, sans=san, password=password, owner=owner, request_id=request_id
        )
    blob = cert.pop("pkcs12_b64", None)
    if not blob:
        output.fail(
            "already_issued", cert.get("note") or "the certificate exists; its key is not kept"
        )
    _write_private(out, base64.b64decode(blob))
    output.emit_json({**cert, "pkcs12_file": str(out)}) if json_ else _summary(cert, out)


@app.command()
def renew(
    cert_id: str = typer.Argument(..., help="Certificate id, serial or SHA-256 thumbprint"),
    template: str = typer.Option(None, "--template", "-t", help="Renew under another template"),
    ca: str = typer.Option(None, "--ca", help="Renew under another CA"),
    csr_file: Path = typer.Option(
        None, "--csr", exists=True, dir_okay=False, help="The new key's CSR"
    ),
    password: str = typer.Option(None, "--password", help="Without --csr: a server-made PKCS#12"),
    out: Path = typer.Option(None, "--out"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Renew a certificate: same subject, SANs and template, a new key."""
    csr_text = None
    if csr_file:
        data = csr_file.read_bytes()
        csr_text = data.decode() if b"-----BEGIN" in data else base64.b64encode(data).decode()
    with output.api_errors():
        cert = Certbus().enroll.renew(
            cert_id, template=template, ca=ca, csr=csr_text, password=password
        )
    blob = cert.pop("pkcs12_b64", None)
    if out and blob:
        _write_private(out, base64.b64decode(blob))
    elif out:
        out.write_text(cert["certificate_pem"] + "".join(cert.get("chain_pem") or []))
    output.emit_json(cert) if json_ else _summary(cert, out)
