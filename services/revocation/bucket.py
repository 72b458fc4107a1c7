"""The JetStream object store bucket the issuer puts its CRLs into."""

from __future__ import annotations

import nats
from nats.aio.client import Client

from shared.subjects import OBJECT_BUCKET_CRLS


class BucketCrlSource:
    """Reads CRL objects over its own nats-py connection, opened on first use."""

    def __init__(self, nats_url: str, bucket: str = OBJECT_BUCKET_CRLS) -> None:
        self._url = nats_url
        self._bucket = bucket
        self._nc: Client | None = None

    async def fetch(self, object_name: str) -> bytes:
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(self._url.split(","), max_reconnect_attempts=-1)
        store = await self._nc.jetstream().object_store(self._bucket)
        result = await store.get(object_name)
        return result.data or b""

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = None
