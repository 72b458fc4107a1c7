"""The bus: broker factory, stream declaration, publishing, durable consumers and RPC.

Every event goes to JetStream with its ``event_id`` as ``Nats-Msg-Id`` and the publish waits
for the stream's acknowledgement. Consumers are durable pull consumers, one per
(service, subject), taking messages in batches; each message is acknowledged only after its
handler's transaction committed, so a crash loses nothing and redelivery finds the work done.
The delivery limit is enforced here, not by the server: a message whose deliveries all ended
without an acknowledgement (the worker crashed or hung) is dead-lettered, never dropped.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict, TypeVar

import nats
from faststream import AckPolicy, Context
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsRouter, PullSub
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from shared import compat, logs, subjects  # noqa: F401 - compat patches on import
from shared.events import Event, model_for

log = logging.getLogger("certbus.bus")

E = TypeVar("E", bound=Event)
BatchHandler = Callable[[list[E]], Awaitable[None]]
InvalidHandler = Callable[[bytes, str, str], Awaitable[None]]


class _DurableServerConfig(TypedDict):
    """The fields of a durable's ``ConsumerConfig`` this module keeps the server holding."""

    max_deliver: int
    ack_wait: float
    max_ack_pending: int


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
        await self.publish_raw(
            event.subject_name(), event.event_id, event.model_dump_json().encode()
        )

    @property
    def connection(self) -> Client:
        """The broker's own nats-py connection."""
        return self._broker.connection

    async def publish_raw(
        self, subject: str, event_id: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        # nats-py's JetStream publish on the broker's own connection: the same acknowledged,
        # deduplicated publish as the broker's, without its per-message middleware cost.
        js = self.connection.jetstream()
        await js.publish(
            subject,
            payload,
            timeout=self._timeout,
            stream=subjects.stream_for(subject),
            headers={
                "Nats-Msg-Id": event_id,
                "content-type": "application/json",
                **(headers or {}),
            },
        )


MAX_ACK_PENDING = 20000
RECONCILE_RETRY_SECONDS = 30.0


def _backoff(delivered: int) -> float:
    return min(30.0, 0.5 * 2 ** max(0, delivered - 1))


def _metadata(m: Msg) -> Msg.Metadata | None:
    """JetStream's delivery data; None for a message of FastStream's in-memory test broker."""
    try:
        return m.metadata
    except NotJSMessageError:
        return None


def _delivered(m: Msg) -> int:
    meta = _metadata(m)
    return meta.num_delivered if meta else 1


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

    The server redelivers without limit and the limit is counted here: a message delivered
    more than ``max_deliver`` times, its earlier deliveries having ended without an outcome
    (the worker crashed or hung past ``ack_wait``), is parked without running the handler. A
    redelivered message runs on its own, after the fresh ones, so that one which kills the
    worker takes as few others down with it as possible.
    """
    durable = subjects.durable_name(service, subject)
    stream = subjects.stream_for(subject)
    event_model = model or model_for(subject)
    # What the server must hold for this consumer. A durable made by an earlier version (with a
    # server-side max_deliver, which drops a message whose last delivery crashed) is updated.
    server_config: _DurableServerConfig = {
        "max_deliver": -1,
        "ack_wait": ack_wait,
        "max_ack_pending": MAX_ACK_PENDING,
    }
    next_reconcile: float | None = 0.0

    async def _reconcile() -> None:
        """Bring an existing durable to ``server_config`` before this process handles anything.

        Subscribing to a durable that exists only binds to it, whatever its config; a create
        with the same name updates these fields in place (nats-server 2.10+). It runs before the
        first batch's handler, so a message on its last delivery under the old limit is covered.
        """
        nonlocal next_reconcile
        if next_reconcile is None or time.monotonic() < next_reconcile:
            return
        try:
            js = publisher().connection.jetstream()
            current = (await js.consumer_info(stream, durable)).config
            if (
                current.max_deliver != -1
                or abs((current.ack_wait or 0.0) - ack_wait) > 1e-3
                or current.max_ack_pending != MAX_ACK_PENDING
            ):
                await js.add_consumer(stream, current.evolve(**server_config))
                log.warning(
                    "%s: consumer updated from max_deliver=%s ack_wait=%s to unlimited server "
                    "redelivery (limit %s counted by the consumer) ack_wait=%s",
                    durable, current.max_deliver, current.ack_wait, max_deliver, ack_wait,
                )  # fmt: skip
            next_reconcile = None
        except Exception as exc:  # noqa: BLE001 - handle the batch anyway and try again later
            next_reconcile = time.monotonic() + RECONCILE_RETRY_SECONDS
            log.error(
                "%s: cannot update the consumer's config (%s: %s); until it is, a message whose "
                "last delivery crashes is dropped by the server; retrying in %.0fs",
                durable, type(exc).__name__, exc, RECONCILE_RETRY_SECONDS,
            )  # fmt: skip

    async def _dead_letter(m: Msg, reason: str) -> None:
        meta = _metadata(m)
        original = (m.headers or {}).get("Nats-Msg-Id") or (
            f"seq-{meta.sequence.stream}" if meta else str(uuid.uuid4())
        )
        await publisher().publish_raw(
            subjects.dead_letter(m.subject),
            f"dlq-{durable}-{original}",
            m.data,
            {"certbus-reason": reason[:1000], "certbus-consumer": durable},
        )
        log.error("dead-lettered %s message after %s: %s", m.subject, durable, reason)

    async def _one(m: Msg, ev: Event) -> None:
        """Handle one message alone; its ack is confirmed before the caller runs the next."""
        try:
            await handler([ev])
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then parked
            delivered = _delivered(m)
            if delivered >= max_deliver:
                await _dead_letter(m, f"{type(exc).__name__}: {exc}")
                await m.term()
            else:
                log.warning("%s failed (attempt %s): %s", durable, delivered, exc)
                await m.nak(delay=_backoff(delivered))
            return
        try:
            await m.ack_sync(timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - handled; a redelivery finds the work done
            log.warning("%s: ack not confirmed (%s); the message may come again", durable, exc)

    async def _one_by_one(items: list[tuple[Msg, Event]]) -> None:
        for m, ev in items:
            token = logs.correlation_id.set(ev.correlation_id)
            try:
                await _one(m, ev)
            finally:
                logs.correlation_id.reset(token)

    async def _batch(items: list[tuple[Msg, Event]]) -> None:
        token = logs.correlation_id.set(items[0][1].correlation_id)
        try:
            await handler([ev for _, ev in items])
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "%s: batch of %d failed (%s); retrying one by one", durable, len(items), exc
            )
            await _one_by_one(items)
            return
        finally:
            logs.correlation_id.reset(token)
        for m, _ in items:
            await m.ack()

    @router.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=max_wait, batch=True),
        config=ConsumerConfig(durable_name=durable, **server_config),
        ack_policy=AckPolicy.MANUAL,
        title=f"{service}:{subject}",
        description=(handler.__doc__ or "").strip() or None,
    )
    async def _consume(body: Any, message: Any = Context("message")) -> None:  # noqa: ARG001
        raw: list[Msg] = message.raw_message
        if raw and _metadata(raw[0]):
            await _reconcile()
        fresh: list[tuple[Msg, Event]] = []
        redelivered: list[tuple[Msg, Event]] = []
        for m in raw:
            delivered = _delivered(m)
            if delivered > max_deliver:
                # An exception on the last delivery parks the message then and there, so this
                # one's last delivery ended without an outcome: running it again may only
                # crash the worker again.
                await _dead_letter(
                    m,
                    f"not acknowledged after {delivered - 1} deliveries "
                    "(the worker crashed or timed out handling it)",
                )
                await m.term()
                continue
            try:
                ev = event_model.model_validate_json(m.data)
            except ValidationError as exc:
                reason = _validation_summary(exc)
                try:
                    if on_invalid is None:
                        raise LookupError("no handler for invalid events")
                    await on_invalid(m.data, m.subject, reason)
                except Exception as handler_exc:  # noqa: BLE001 - park it rather than lose it
                    detail = (
                        ""
                        if isinstance(handler_exc, LookupError)
                        else f" (its handler failed: {type(handler_exc).__name__}: {handler_exc})"
                    )
                    await _dead_letter(m, f"invalid event: {reason}{detail}")
                await m.term()
                continue
            (redelivered if delivered > 1 else fresh).append((m, ev))
        if fresh:
            await _batch(fresh)
            if redelivered:
                # The fresh messages' acks reach the server before a suspect message runs.
                try:
                    await publisher().connection.flush(timeout=5)
                except Exception as exc:  # noqa: BLE001 - they would only come again
                    log.warning("%s: acks not flushed (%s)", durable, exc)
        if redelivered:
            # An earlier delivery of each failed, crashed or hung. One at a time, each ack
            # confirmed before the next, a message that kills the worker takes down only those
            # behind it; the order rotates with the delivery count so that they change.
            start = max(_delivered(m) for m, _ in redelivered) % len(redelivered)
            await _one_by_one(redelivered[start:] + redelivered[:start])


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
            return {
                "ok": False,
                "error": {"code": exc.code, "message": exc.message, "status": exc.status},
            }
        except ValidationError as exc:
            return {
                "ok": False,
                "error": {
                    "code": "invalid_request",
                    "message": _validation_summary(exc),
                    "status": 422,
                },
            }
        except Exception as exc:  # noqa: BLE001 - the caller gets a reason instead of a time-out
            log.exception("rpc %s.%s failed", service, operation)
            return {"ok": False, "error": {"code": "internal", "message": str(exc), "status": 500}}


async def rpc_call(
    broker: NatsBroker,
    service: str,
    operation: str,
    payload: dict[str, Any],
    timeout: float = 5.0,  # noqa: ASYNC109 - a per-request timeout, passed on to nats-py
) -> Any:
    """Call a service synchronously; raises ``RpcError`` with the service's code and message."""
    try:
        reply = await broker.request(
            json.dumps(payload, default=str), subjects.rpc(service, operation), timeout=timeout
        )
    except TimeoutError as exc:
        raise RpcError(
            "unavailable", f"{service} did not answer {operation} in {timeout}s", 503
        ) from exc
    except Exception as exc:  # noqa: BLE001 - no responders and friends
        raise RpcError("unavailable", f"{service} is not reachable: {exc}", 503) from exc
    data = json.loads(reply.body)
    if not data.get("ok"):
        err = data.get("error", {})
        raise RpcError(err.get("code", "error"), err.get("message", ""), err.get("status", 400))
    return data.get("result")
