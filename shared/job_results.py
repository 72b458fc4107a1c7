"""A job result too large for one message travels as parts and is put back together.

NATS refuses a message larger than the server's ``max_payload`` (1 MiB by default), and an
inventory of a store with thousands of certificates, each with its PEM, is larger than that.
The agent cuts the lists of such a result (an inventory's entries, a discovery's stores) into
runs, one ``agent.job.completed`` per run, each well under the limit; the other values of the
result go in every part. Every part names the job, its place (``part`` of ``parts``) and the
SHA-256 of the whole result, so parts of two different reports of one job (a job run again
after its store changed) are never mixed. Event ids derive from all three, so a part published
again is dropped by the stream's duplicate window.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic_core import to_json

from shared.events import AgentJobCompleted, derived_id

DEFAULT_MAX_PAYLOAD = 1024 * 1024


class ResultTooLarge(ValueError):
    """A result that cannot be cut small enough: one of its items alone is too large."""


def part_budget(max_payload: int) -> int:
    """The most one part may take: half the server's limit, leaving room for headers and for
    fields a later version of the event adds."""
    return max_payload // 2


def size(event: AgentJobCompleted) -> int:
    """Bytes on the wire: the event's JSON as it is published."""
    return len(event.model_dump_json().encode())


def split(event: AgentJobCompleted, max_bytes: int) -> list[AgentJobCompleted]:
    """The event itself when it fits in ``max_bytes``, else its parts, each of which does."""
    if size(event) <= max_bytes:
        return [event]
    lists = [k for k, v in event.result.items() if isinstance(v, list)]
    digest = hashlib.sha256(to_json(event.result)).hexdigest()
    # The widest part numbers a split can have, so that the frame never under-counts.
    frame = size(_part(event, {k: [] for k in lists}, 10**6, 10**6, digest))
    if frame > max_bytes:
        raise ResultTooLarge(
            f"the job's result takes {frame} bytes without its lists; a part holds {max_bytes}"
        )
    runs: list[dict[str, list[Any]]] = []
    run: dict[str, list[Any]] = {k: [] for k in lists}
    used = frame
    for key in lists:
        for item in event.result[key]:
            cost = len(to_json(item)) + 1  # the item and the comma before it
            if frame + cost > max_bytes:
                raise ResultTooLarge(
                    f"one item of the result's {key!r} takes {cost} bytes; a part holds "
                    f"{max_bytes - frame}"
                )
            if used + cost > max_bytes:
                runs.append(run)
                run, used = {k: [] for k in lists}, frame
            run[key].append(item)
            used += cost
    runs.append(run)
    return [_part(event, r, i, len(runs), digest) for i, r in enumerate(runs, start=1)]


def _part(
    event: AgentJobCompleted, run: dict[str, list[Any]], part: int, parts: int, digest: str
) -> AgentJobCompleted:
    result = {k: run.get(k, v) if isinstance(v, list) else v for k, v in event.result.items()}
    return event.model_copy(
        update={
            "event_id": derived_id(event.job_id, event.subject, digest, f"{part}/{parts}"),
            "result": result,
            "part": part,
            "parts": parts,
            "result_sha256": digest,
        }
    )


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from its parts' results, given in part order: lists are joined, every other
    value is the first part's."""
    first = results[0]
    return {
        k: [item for r in results for item in r.get(k, [])] if isinstance(v, list) else v
        for k, v in first.items()
    }
