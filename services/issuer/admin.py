"""Administration on the issuer's own host: ``python -m services.issuer.admin import-ca ...``.

Private keys are read from local files (or stay on the token); they never cross the API.
"""

from __future__ import annotations

from pathlib import Path

import typer

from services.issuer.importca import import_ca
from services.issuer.pkcs11signer import HsmConfig, HsmKeys, open_session
from services.issuer.settings import IssuerSettings

app = typer.Typer(no_args_is_help=True, help="certbus issuer administration.")


@app.callback()
def _main() -> None:
    """Commands that run next to the CA keys."""


@app.command("import-ca")
def import_ca_command(
    name: str = typer.Option(..., "--name", help="The name the CA will have in certbus"),
    cert: Path = typer.Option(..., "--cert", exists=True, help="The CA certificate (PEM)"),
    chain: Path = typer.Option(
        None, "--chain", exists=True, help="Its issuers up to the root (PEM)"
    ),
    key: Path = typer.Option(
        None, "--key", exists=True, help="Its private key (PEM, PKCS#8 or legacy)"
    ),
    key_password_file: Path = typer.Option(None, "--key-password-file", exists=True),
    pkcs11: bool = typer.Option(
        False, "--pkcs11", help="The key is on the configured token, labelled NAME"
    ),
) -> None:
    """Import an existing CA: certificate + key file, or certificate + PKCS#11 key."""
    settings = IssuerSettings()
    hsm = None
    if pkcs11:
        hsm = HsmKeys(
            open_session(
                HsmConfig(
                    settings.pkcs11_module, settings.pkcs11_token or "certbus", settings.hsm_pin()
                )
            )
        )
    elif key is None:
        raise typer.BadParameter("give --key FILE or --pkcs11")
    password = key_password_file.read_bytes().strip() if key_password_file else None
    try:
        import_ca(
            settings.key_dir(),
            settings.passphrase(),
            name,
            cert.read_bytes(),
            chain.read_bytes() if chain else b"",
            key.read_bytes() if key else None,
            password,
            hsm,
        )
    except ValueError as exc:
        typer.echo(f"error import_refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"imported CA {name}; restart the issuer to use it")


if __name__ == "__main__":
    app()
