"""The public endpoint relying parties speak to: CRLs, CA certificates and OCSP, over plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import uvicorn
from fastapi import FastAPI, Request, Response

from services.revocation import crls
from services.revocation.models import KnownCa, StoredCrl
from services.revocation.reads import ReadView

log = logging.getLogger("certbus.revocation.public")

DELTA_SUFFIX = "-delta.crl"
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"


class OcspAnswerer(Protocol):
    async def respond(self, request_der: bytes) -> tuple[bytes, dict[str, str]]: ...


def make_public_app(db: ReadView, crl_max_age: int, ocsp: OcspAnswerer | None = None) -> FastAPI:
    app = FastAPI(
        title="certbus revocation public endpoint", docs_url=None, redoc_url=None, openapi_url=None
    )

    async def _crl(ca: str, delta: bool) -> StoredCrl | None:
        async with db.session() as session:
            return await session.get(StoredCrl, (ca, delta))

    @app.get("/crl/{name}")
    async def crl(name: str, request: Request) -> Response:
        if not name.endswith(".crl"):
            return Response(status_code=404)
        found = None
        if name.endswith(DELTA_SUFFIX):
            found = await _crl(name[: -len(DELTA_SUFFIX)], True)
        if found is None:
            found = await _crl(name[: -len(".crl")], False)
        if found is None:
            return Response(status_code=404)
        headers = crls.caching_headers(found, crl_max_age)
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(found.der, media_type=crls.CRL_MEDIA_TYPE, headers=headers)

    @app.get("/ca/{name}")
    async def ca_certificate(name: str) -> Response:
        if not name.endswith(".crt"):
            return Response(status_code=404)
        async with db.session() as session:
            ca = await session.get(KnownCa, name[: -len(".crt")])
        if ca is None:
            return Response(status_code=404)
        return Response(
            ca.der,
            media_type="application/pkix-cert",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if ocsp is not None:
        import base64
        from urllib.parse import unquote

        @app.post("/ocsp")
        async def ocsp_post(request: Request) -> Response:
            body, headers = await ocsp.respond(await request.body())
            return Response(body, media_type=OCSP_RESPONSE, headers=headers)

        @app.get("/ocsp/{encoded:path}")
        async def ocsp_get(encoded: str) -> Response:
            try:
                der = base64.b64decode(unquote(encoded), validate=False)
            except ValueError:
                der = b""
            body, headers = await ocsp.respond(der)
            return Response(body, media_type=OCSP_RESPONSE, headers=headers)

    return app


def _http_protocol() -> str:
    """httptools parses HTTP several times faster than the pure-Python h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


class PublicServer:
    """Runs the public app under uvicorn inside the service's event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
            )
        )
        # FastStream owns SIGINT/SIGTERM for the whole process; uvicorn must not take them.
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="revocation-public-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("public endpoint stopped while starting")
            await asyncio.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("public endpoint on http://%s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
