"""The bus: broker factory, stream declaration, publishing, durable consumers and RPC.

Every event goes to JetStream with its ``event_id`` as ``Nats-Msg-Id`` and the publish waits
for the stream's acknowledgement. Consumers are durable pull consumers, one per
(service, subject), taking messages in batches; each message is acknowledged only after its
handler's transaction committed, so a crash loses nothing and redelivery finds the work done.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from faststream import AckPolicy, Context
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from shared import compat, logs, subjects  # noqa: F401 - compat patches on import
from shared.events import Event, model_for

log = logging.getLogger("certbus.bus")

E = TypeVar("E", bound=Event)
BatchHandler = Callable[[list[E]], Awaitable[None]]
InvalidHandler = Callable[[bytes, str, str], Awaitable[None]]


def make_broker(nats_url: str, service: str) -> NatsBroker:
    return NatsBroker(
        nats_url.split(","),
        name=f"certbus-{service}@{socket.gethostname()}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(f"certbus.{service}.broker"),
        log_level=logging.DEBUG,
    )


async def ensure_streams(nats_url: str, replicas: int = 1) -> None:
    """Create or update every stream of the catalog, identically from any service."""
    nc = await nats.connect(nats_url.split(","), connect_timeout=5, max_reconnect_attempts=5)
    try:
        js = nc.jetstream()
        for stream in subjects.STREAMS:
            config = StreamConfig(
                name=stream.name,
                subjects=list(stream.subjects),
                storage=StorageType.FILE,
                duplicate_window=subjects.DUPLICATE_WINDOW_SECONDS,
                num_replicas=replicas,
            )
            try:
                await js.stream_info(stream.name)
                await js.update_stream(config)
            except NotFoundError:
                await js.add_stream(config)
        try:
            await js.object_store(subjects.OBJECT_BUCKET_CRLS)
        except Exception:  # noqa: BLE001 - the bucket does not exist yet
            from nats.js.api import ObjectStoreConfig

            await js.create_object_store(
                subjects.OBJECT_BUCKET_CRLS,
                config=ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas),
            )
    finally:
        await nc.close()


class EventPublisher:
    """Publishes events to JetStream and waits for the stream to store them."""

    def __init__(self, broker: NatsBroker, timeout: float = 10.0) -> None:
        self._broker = broker
        self._timeout = timeout

    async def publish(self, event: Event) -> None:
        await self.publish_raw(event.subject_name(), event.event_id, event.model_dump_json().encode())

    async def publish_raw(
        self, subject: str, event_id: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        # nats-py's JetStream publish on the broker's own connection: the same acknowledged,
        # deduplicated publish as the broker's, without its per-message middleware cost.
        js = self._broker.connection.jetstream()
        await js.publish(
            subject,
            payload,
            timeout=self._timeout,
            stream=subjects.stream_for(subject),
            headers={"Nats-Msg-Id": event_id, "content-type": "application/json", **(headers or {})},
        )


def _backoff(delivered: int) -> float:
    return min(30.0, 0.5 * 2 ** max(0, delivered - 1))


def durable_consumer(
    router: NatsRouter | NatsBroker,
    *,
    service: str,
    subject: str,
    handler: BatchHandler[Any],
    publisher: Callable[[], EventPublisher],
    on_invalid: InvalidHandler | None = None,
    batch_size: int = 100,
    max_deliver: int = 8,
    ack_wait: float = 30.0,
    model: type[Event] | None = None,
    max_wait: float = 1.0,
) -> None:
    """Bind ``handler`` to a durable pull consumer of ``subject`` for ``service``.

    ``max_wait`` bounds how long one pull waits for its batch to fill: it is also the latency a
    lone message can see, since a pull that got fewer messages than ``batch_size`` waits it out.

    The handler takes a list of events and should commit their effects in one transaction.
    If it raises, each message of the batch is retried on its own; one that keeps failing is
    parked on ``deadletter.<subject>`` with the reason after ``max_deliver`` attempts. A message
    that is not a valid event goes to ``on_invalid`` (or the dead-letter subject) and is acked.
    """
    durable = subjects.durable_name(service, subject)
    event_model = model or model_for(subject)

    async def _dead_letter(m: Msg, reason: str) -> None:
        original = (m.headers or {}).get("Nats-Msg-Id") or str(uuid.uuid4())
        await publisher().publish_raw(
            subjects.dead_letter(m.subject),
            f"dlq-{durable}-{original}",
            m.data,
            {"certbus-reason": reason[:1000], "certbus-consumer": durable},
        )
        log.error("dead-lettered %s message after %s: %s", m.subject, durable, reason)

    async def _one(m: Msg, ev: Event) -> None:
        try:
            await handler([ev])
            await m.ack()
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then parked
            delivered = m.metadata.num_delivered if m.metadata else 1
            if delivered >= max_deliver:
                await _dead_letter(m, f"{type(exc).__name__}: {exc}")
                await m.term()
            else:
                log.warning("%s failed (attempt %s): %s", durable, delivered, exc)
                await m.nak(delay=_backoff(delivered))

    @router.subscriber(
        subject,
        stream=JStream(subjects.stream_for(subject), declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=max_wait, batch=True),
        config=ConsumerConfig(
            durable_name=durable, max_deliver=max_deliver, ack_wait=ack_wait, max_ack_pending=20000
        ),
        ack_policy=AckPolicy.MANUAL,
        title=f"{service}:{subject}",
        description=(handler.__doc__ or "").strip() or None,
    )
    async def _consume(body: Any, message: Any = Context("message")) -> None:  # noqa: ARG001
        raw: list[Msg] = message.raw_message
        good: list[tuple[Msg, Event]] = []
        for m in raw:
            try:
                ev = event_model.model_validate_json(m.data)
            except ValidationError as exc:
                reason = _validation_summary(exc)
                try:
                    if on_invalid is None:
                        raise LookupError("no handler for invalid events")
                    await on_invalid(m.data, m.subject, reason)
                except Exception as handler_exc:  # noqa: BLE001 - park it rather than lose it
                    detail = "" if isinstance(handler_exc, LookupError) else (
                        f" (its handler failed: {type(handler_exc).__name__}: {handler_exc})")
                    await _dead_letter(m, f"invalid event: {reason}{detail}")
                await m.term()
                continue
            good.append((m, ev))
        if not good:
            return
        token = logs.correlation_id.set(good[0][1].correlation_id)
        try:
            await handler([ev for _, ev in good])
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: batch of %d failed (%s); retrying one by one", durable, len(good), exc)
            for m, ev in good:
                logs.correlation_id.set(ev.correlation_id)
                await _one(m, ev)
            return
        finally:
            logs.correlation_id.reset(token)
        for m, _ in good:
            await m.ack()


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)


class RpcError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


RpcHandler = Callable[[dict[str, Any]], Awaitable[Any]]


def rpc_endpoint(
    router: NatsRouter | NatsBroker,
    service: str,
    operation: str,
    fn: RpcHandler,
    max_workers: int = 1,
) -> None:
    """Serve ``rpc.<service>.<operation>``: replicas share it through a queue group.

    ``max_workers`` > 1 lets one process answer that many calls concurrently.
    """

    @router.subscriber(
        subjects.rpc(service, operation),
        queue=f"{service}-rpc",
        max_workers=max_workers,
        title=f"{service}:rpc:{operation}",
        description=(fn.__doc__ or "").strip() or None,
    )
    async def _serve(body: Any) -> dict[str, Any]:
        request = body if isinstance(body, dict) else (json.loads(body) if body else {})
        try:
            return {"ok": True, "result": await fn(request)}
        except RpcError as exc:
            return {"ok": False, "error": {"code": exc.code, "message": exc.message, "status": exc.status}}
        except ValidationError as exc:
            return {
                "ok": False,
                "error": {"code": "invalid_request", "message": _validation_summary(exc), "status": 422},
            }
        except Exception as exc:  # noqa: BLE001 - the caller gets a reason instead of a time-out
            log.exception("rpc %s.%s failed", service, operation)
            return {"ok": False, "error": {"code": "internal", "message": str(exc), "status": 500}}


async def rpc_call(
    broker: NatsBroker, service: str, operation: str, payload: dict[str, Any], timeout: float = 5.0
) -> Any:
    """Call a service synchronously; raises ``RpcError`` with the service's code and message."""
    try:
        reply = await broker.request(json.dumps(payload, default=str), subjects.rpc(service, operation), timeout=timeout)
    except TimeoutError as exc:
        raise RpcError("unavailable", f"{service} did not answer {operation} in {timeout}s", 503) from exc
    except Exception as exc:  # noqa: BLE001 - no responders and friends
        raise RpcError("unavailable", f"{service} is not reachable: {exc}", 503) from exc
    data = json.loads(reply.body)
    if not data.get("ok"):
        err = data.get("error", {})
        raise RpcError(err.get("code", "error"), err.get("message", ""), err.get("status", 400))
    return data.get("result")
