"""Which events go to which channel: subject patterns, and filters by owner and template.

Webhooks and e-mail configured by plain settings receive the default subjects. A
subscriptions file adds named channels with their own subjects and filters:

    channels:
      security:  {type: webhook, url: "https://hooks.example.com/T0/B0/secret"}
      pki-team:  {type: email, to: [pki@example.com]}
    subscriptions:
      - {channel: security, subjects: [cert.revoked], templates: [tls-server]}
      - {channel: pki-team, subjects: ["cert.*"], owners: [alice, bob]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.notifier.channels import Channel

NEVER_NOTIFIED = ("notification.", "agent.", "deadletter.", "rpc.")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: ``*`` is one token, ``>`` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


@dataclass(frozen=True)
class Subscription:
    channel: str
    subjects: tuple[str, ...]
    owners: frozenset[str] = frozenset()
    templates: frozenset[str] = frozenset()

    def wants(self, subject: str, event: Mapping[str, Any]) -> bool:
        if not any(subject_matches(p, subject) for p in self.subjects):
            return False
        if self.owners and (event.get("owner") or event.get("user")) not in self.owners:
            return False
        return not self.templates or event.get("template") in self.templates

    def describe(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "subjects": list(self.subjects),
            "owners": sorted(self.owners),
            "templates": sorted(self.templates),
        }


@dataclass
class Routing:
    channels: dict[str, Channel] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)

    def add(self, channel: Channel, subscription: Subscription) -> None:
        self.channels[subscription.channel] = channel
        self.subscriptions.append(subscription)

    def channels_for(self, subject: str, event: Mapping[str, Any]) -> list[Channel]:
        names = dict.fromkeys(s.channel for s in self.subscriptions if s.wants(subject, event))
        return [self.channels[n] for n in names if n in self.channels]

    def subjects(self, catalog: Iterable[str]) -> list[str]:
        """The concrete subjects some subscription wants: one durable consumer each."""
        return sorted(
            subject
            for subject in catalog
            if not subject.startswith(NEVER_NOTIFIED)
            and "*" not in subject
            and any(subject_matches(p, subject) for s in self.subscriptions for p in s.subjects)
        )

    def describe(self) -> list[dict[str, Any]]:
        return [
            {**s.describe(), "channel_type": _kind(self.channels.get(s.channel))}
            for s in self.subscriptions
        ]


def _kind(channel: Channel | None) -> str | None:
    return None if channel is None else channel.name.split(":", 1)[0]


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    type: str
    options: dict[str, Any]


def load(path: Path) -> tuple[list[ChannelSpec], list[Subscription]]:
    """Read a subscriptions file; raises ``ValueError`` naming what is wrong."""
    data = yaml.safe_load(path.read_text()) or {}
    specs = []
    for name, options in (data.get("channels") or {}).items():
        options = dict(options or {})
        kind = options.pop("type", None)
        if kind not in ("webhook", "email"):
            raise ValueError(f"{path}: channel {name!r} needs type webhook or email")
        if kind == "webhook" and not options.get("url"):
            raise ValueError(f"{path}: webhook channel {name!r} needs a url")
        specs.append(ChannelSpec(str(name), kind, options))
    known = {s.name for s in specs}
    subscriptions = []
    for i, entry in enumerate(data.get("subscriptions") or []):
        channel = entry.get("channel")
        if channel not in known:
            raise ValueError(f"{path}: subscription {i} names unknown channel {channel!r}")
        subscriptions.append(
            Subscription(
                channel=channel,
                subjects=tuple(_strings(entry.get("subjects"), path, i) or ("cert.>",)),
                owners=frozenset(_strings(entry.get("owners"), path, i)),
                templates=frozenset(_strings(entry.get("templates"), path, i)),
            )
        )
    return specs, subscriptions


def _strings(value: Any, path: Path, index: int) -> Sequence[str]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: subscription {index}: expected a list of names")
    return tuple(value)
