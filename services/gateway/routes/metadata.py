"""Certificate metadata and the Compare access valve, answered by the metadata service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field, model_validator

from services.gateway.deps import Bus, get_bus

router = APIRouter(tags=["metadata"])

Scalar = str | int | bool | None


class MetadataUpdate(BaseModel):
    fields: dict[str, Scalar] = Field(
        description="Fields to set; null clears a field", examples=[{"isEnabled": False}]
    )


class Comparison(BaseModel):
    cert_id: str | None = Field(None, description="Certificate id or serial")
    thumbprint: str | None = Field(None, description="SHA-1 or SHA-256, any case, colons allowed")
    expected: dict[str, Any] = Field(examples=[{"isEnabled": True}])

    @model_validator(mode="after")
    def _names_a_certificate(self) -> Comparison:
        if not (self.cert_id or self.thumbprint):
            raise ValueError("give cert_id or thumbprint")
        return self


class FieldDefinition(BaseModel):
    type: str = Field("string", pattern="^(string|bool|int|date)$")
    required: bool = False
    default: Scalar = None
    description: str = ""


def _actor(request: Request) -> str:
    return str(getattr(request.state, "actor", None) or "api")


@router.get("/v1/certificates/{cert_id}/metadata", summary="A certificate's metadata")
async def get_metadata(cert_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("metadata", "get", {"cert_id": cert_id})


@router.put("/v1/certificates/{cert_id}/metadata", summary="Set metadata fields")
async def put_metadata(
    cert_id: str,
    body: MetadataUpdate,
    request: Request,
    bus: Bus = Depends(get_bus),
    correlation_id: str | None = Header(None, alias="X-Correlation-Id"),
) -> dict[str, Any]:
    return await bus.call(
        "metadata",
        "set",
        {
            "cert_id": cert_id,
            "fields": body.fields,
            "actor": _actor(request),
            "correlation_id": correlation_id,
        },
    )


@router.get("/v1/certificates/{cert_id}/metadata/history", summary="Every change, oldest first")
async def metadata_history(cert_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("metadata", "history", {"cert_id": cert_id})


@router.post("/v1/metadata/compare", summary="Do a certificate's values match? (access valve)")
async def compare(body: Comparison, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("metadata", "compare", body.model_dump())


@router.get("/v1/metadata/fields", summary="Defined metadata fields")
async def list_fields(bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("metadata", "fields.list", {})


@router.put("/v1/metadata/fields/{name}", summary="Define or redefine a metadata field")
async def define_field(
    name: str, body: FieldDefinition, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await bus.call("metadata", "fields.define", {"name": name, **body.model_dump()})
