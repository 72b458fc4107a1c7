"""Synchronous enrollment: CSR, server-made PFX, and renewal, answered by the issuer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/enrollment", tags=["enrollment"])

ENROLL_TIMEOUT = 30.0


class CsrEnrollment(BaseModel):
    template: str = Field(examples=["user-client"])
    csr: str = Field(description="PEM (also NEW CERTIFICATE REQUEST), base64 DER")
    request_id: str | None = Field(None, description="Repeat it to get the same certificate back")
    owner: str | None = None
    device: str | None = None
    subject: str | None = Field(None, description="Overrides the CSR's subject, e.g. CN=alice")
    sans: list[str] = Field(default_factory=list, examples=[["email:alice@example.com"]])
    metadata: dict[str, str] = Field(default_factory=dict)
    ca: str | None = None


class PfxEnrollment(BaseModel):
    template: str = Field(examples=["tls-server"])
    subject: str = Field(examples=["CN=www.example.com"])
    sans: list[str] = Field(default_factory=list, examples=[["dns:www.example.com"]])
    password: str = Field(min_length=8, description="Protects the PKCS#12; never stored or logged")
    request_id: str | None = None
    owner: str | None = None
    device: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    ca: str | None = None


class Renewal(BaseModel):
    cert_id: str = Field(description="Certificate id, serial or SHA-256 thumbprint")
    template: str | None = None
    ca: str | None = None
    csr: str | None = Field(None, description="The new key's CSR; without it, a password for a PFX")
    password: str | None = Field(None, min_length=8)
    request_id: str | None = None


def _actor(request: Request) -> str:
    return str(getattr(request.state, "actor", None) or "api")


async def _enroll(bus: Bus, op: str, body: BaseModel, request: Request) -> dict[str, Any]:
    payload = {**body.model_dump(), "actor": _actor(request)}
    return await bus.call("issuer", op, payload, timeout=ENROLL_TIMEOUT)


@router.post("/csr", status_code=201, summary="Issue a certificate for a CSR")
async def enroll_csr(
    body: CsrEnrollment, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await _enroll(bus, "enroll.csr", body, request)


@router.post("/pfx", status_code=201, summary="Make a key on the server and return a PKCS#12")
async def enroll_pfx(
    body: PfxEnrollment, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await _enroll(bus, "enroll.pfx", body, request)


@router.post("/renew", status_code=201, summary="Renew: same subject, SANs and template, a new key")
async def renew(body: Renewal, request: Request, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await _enroll(bus, "enroll.renew", body, request)
