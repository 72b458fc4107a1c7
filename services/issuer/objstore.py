"""The JetStream object store bucket where CRLs are put for the revocation service to serve."""

from __future__ import annotations

from typing import Any

import nats

from shared.subjects import OBJECT_BUCKET_CRLS


class NatsObjectStore:
    def __init__(self, nats_url: str, bucket: str = OBJECT_BUCKET_CRLS) -> None:
        self._url = nats_url
        self._bucket = bucket
        self._nc: Any = None
        self._obs: Any = None

    async def open(self) -> None:
        self._nc = await nats.connect(
            self._url.split(","), name="certbus-issuer-crls", max_reconnect_attempts=-1
        )
        self._obs = await self._nc.jetstream().object_store(self._bucket)

    async def put(self, name: str, data: bytes) -> None:
        await self._obs.put(name, data)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
