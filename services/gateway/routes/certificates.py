"""The certificate catalog, answered by inventory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])


@router.get(
    "",
    summary="List or search certificates",
    description="`query` is the search language: fields CN, DN, IssuerDN, SerialNumber, "
    "Thumbprint, NotBefore, NotAfter, Template, KeyType, KeySize, SignatureAlgorithm, Status, "
    "RevocationReason, Owner, Device, Store and any metadata field; operators -eq -ne "
    "-contains -notcontains -startswith -endswith -lt -le -gt -ge (`-eq NULL`); AND, OR, NOT, "
    "parentheses; dates like `%TODAY+30%`. `sort` is a field, `-` first for descending.",
)
async def list_certificates(
    owner: str | None = None,
    query: str | None = Query(None, description='Search language, e.g. CN -contains "alice"'),
    status: str | None = None,
    limit: int = Query(100, ge=1, le=10000),
    offset: int = Query(0, ge=0),
    sort: str | None = None,
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    return await bus.call(
        "inventory",
        "certs.list",
        {
            "owner": owner,
            "query": query,
            "status": status,
            "limit": limit,
            "offset": offset,
            "sort": sort,
        },
    )


@router.get("/{cert_id}", summary="One certificate by id, serial or thumbprint")
async def get_certificate(cert_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "certs.get", {"id": cert_id})


@router.get("/{cert_id}/history", summary="Every event in a certificate's life")
async def certificate_history(cert_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "certs.history", {"id": cert_id})


@router.get("/{cert_id}/locations", summary="Where a certificate is installed, and was")
async def certificate_locations(cert_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "certs.locations", {"id": cert_id})
