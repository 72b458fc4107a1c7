"""Certificate templates: the policy a request must satisfy, read from ``infra/templates.yaml``."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("certbus.issuer.templates")

KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
)
EXTENDED_KEY_USAGES = (
    "server_auth",
    "client_auth",
    "code_signing",
    "email_protection",
    "time_stamping",
    "ocsp_signing",
)
SAN_TYPES = ("dns", "email", "ip", "uri")


class KeyGeneration(StrEnum):
    DEVICE = "device"
    SERVER = "server"
    ANY = "any"


class KeyRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rsa_min_bits: int | None = 2048
    ec_curves: list[str] = Field(default_factory=lambda: ["p256", "p384"])
    ed25519: bool = False
    ml_dsa: list[str] = Field(default_factory=list)
    server_key_type: str = "ec-p256"


class SubjectRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    required: list[str] = Field(default_factory=lambda: ["CN"])
    allowed: list[str] = Field(default_factory=lambda: ["CN", "O", "OU", "L", "ST", "C"])
    patterns: dict[str, str] = Field(default_factory=dict)
    from_requester: dict[str, str] = Field(
        default_factory=dict,
        description="Attribute -> requester field (``owner``) whose value it must equal.",
    )


class SanRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allowed_types: list[str] = Field(default_factory=list)
    required_types: list[str] = Field(default_factory=list)
    dns_suffixes: list[str] = Field(default_factory=list)
    email_domains: list[str] = Field(default_factory=list)
    max: int = 20
    cn_in_dns: bool = False


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    ca: str
    validity_days: int = Field(gt=0, le=3650)
    keys: KeyRules = Field(default_factory=KeyRules)
    key_generation: KeyGeneration = KeyGeneration.DEVICE
    key_usage: list[str] = Field(default_factory=lambda: ["digital_signature"])
    extended_key_usage: list[str] = Field(default_factory=list)
    ocsp_no_check: bool = False
    subject: SubjectRules = Field(default_factory=SubjectRules)
    sans: SanRules = Field(default_factory=SanRules)
    required_metadata: list[str] = Field(default_factory=list)
    enroll_roles: list[str] = Field(
        default_factory=list, description="Actors or roles allowed to enroll; empty allows all."
    )

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class TemplateCatalog:
    """The templates from one file; ``reload()`` rereads it and keeps the old set on error."""

    def __init__(self, path: Path | None = None, templates: list[Template] | None = None) -> None:
        self.path = path
        self._templates: dict[str, Template] = {t.name: t for t in templates or []}
        self._mtime: float | None = None
        if path is not None:
            self.reload()

    def reload(self) -> bool:
        assert self.path is not None
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return False
        self._templates = load_templates(self.path)
        self._mtime = mtime
        log.info("loaded %d templates from %s", len(self._templates), self.path)
        return True

    def reload_if_changed(self) -> None:
        if self.path is None:
            return
        try:
            self.reload()
        except Exception:  # noqa: BLE001 - a broken edit must not take the issuer down
            log.exception("templates file %s is invalid; keeping the previous templates", self.path)

    def get(self, name: str) -> Template | None:
        return self._templates.get(name)

    def all(self) -> list[Template]:
        return list(self._templates.values())


def load_templates(path: Path) -> dict[str, Template]:
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    entries = data.get("templates", data)
    templates: dict[str, Template] = {}
    for name, body in entries.items():
        t = Template(name=name, **(body or {}))
        _check(t)
        templates[name] = t
    return templates


def _check(t: Template) -> None:
    for ku in t.key_usage:
        if ku not in KEY_USAGES:
            raise ValueError(f"template {t.name}: unknown key usage {ku!r}")
    for eku in t.extended_key_usage:
        if eku not in EXTENDED_KEY_USAGES:
            raise ValueError(f"template {t.name}: unknown extended key usage {eku!r}")
    for st in t.sans.allowed_types + t.sans.required_types:
        if st not in SAN_TYPES:
            raise ValueError(f"template {t.name}: unknown SAN type {st!r}")
