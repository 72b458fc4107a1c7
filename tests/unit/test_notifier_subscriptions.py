"""Subscriptions route each event to the channels that asked for it, and e-mail really goes out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.notifier.channels import EmailChannel, Notification
from services.notifier.subscriptions import Routing, Subscription, load, subject_matches
from shared.events import CATALOG
from shared.testing.smtp import SmtpSink


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("cert.revoked", "cert.revoked", True),
        ("cert.*", "cert.revoked", True),
        ("cert.*", "cert.metadata.changed", False),
        ("cert.>", "cert.metadata.changed", True),
        ("cert.>", "cert", False),
        ("user.*.completed", "user.offboarding.completed", True),
        ("user.>", "cert.issued", False),
    ],
)
def test_subject_patterns_follow_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, notification: Notification) -> None:  # pragma: no cover - not sent here
        raise AssertionError("routing never sends")


def test_filters_pick_channels_by_owner_and_template() -> None:
    routing = Routing()
    routing.add(Named("webhook:all"), Subscription("all", ("cert.>",)))
    routing.add(
        Named("webhook:tls"), Subscription("tls", ("cert.issued",), templates=frozenset({"tls"}))
    )
    routing.add(
        Named("email:alice"),
        Subscription("alice", ("cert.*", "user.>"), owners=frozenset({"alice"})),
    )

    def names(subject: str, **event) -> list[str]:
        return [c.name for c in routing.channels_for(subject, event)]

    assert names("cert.issued", owner="alice", template="tls") == [
        "webhook:all",
        "webhook:tls",
        "email:alice",
    ]
    assert names("cert.issued", owner="bob", template="user") == ["webhook:all"]
    assert names("user.offboarding.completed", user="alice") == ["email:alice"]
    assert names("cert.metadata.changed", owner="alice") == ["webhook:all"]


def test_each_subject_some_subscription_wants_gets_one_consumer_and_notifications_none() -> None:
    routing = Routing()
    routing.add(Named("x"), Subscription("x", ("cert.re*", "cert.revoked", ">")))
    wanted = routing.subjects(CATALOG)
    assert "cert.revoked" in wanted and wanted.count("cert.revoked") == 1
    assert not [s for s in wanted if s.startswith(("notification.", "agent."))]


def test_a_subscriptions_file_names_channels_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "subs.yaml"
    path.write_text(
        "channels:\n"
        "  security: {type: webhook, url: 'https://hooks.example.com/T/B/secret'}\n"
        "  pki: {type: email, to: [pki@example.com]}\n"
        "subscriptions:\n"
        "  - {channel: security, subjects: [cert.revoked], templates: tls-server}\n"
        "  - {channel: pki, owners: [alice, bob]}\n"
    )
    specs, subs = load(path)
    assert [(s.name, s.type) for s in specs] == [("security", "webhook"), ("pki", "email")]
    assert subs[0] == Subscription(
        "security", ("cert.revoked",), templates=frozenset({"tls-server"})
    )
    assert subs[1].subjects == ("cert.>",) and subs[1].owners == {"alice", "bob"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("channels: {a: {type: pager}}", "needs type webhook or email"),
        ("channels: {a: {type: webhook}}", "needs a url"),
        ("subscriptions: [{channel: nobody}]", "unknown channel 'nobody'"),
        ("channels: {a: {type: email}}\nsubscriptions: [{channel: a, owners: 5}]", "list of names"),
    ],
)
def test_a_bad_subscriptions_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        load(path)


async def test_the_email_channel_sends_one_message_per_event_through_smtp() -> None:
    sink = await SmtpSink().start()
    try:
        channel = EmailChannel(
            "127.0.0.1", sink.port, "certbus@example.com", ["pki@example.com", "sec@example.com"]
        )
        await channel.send(
            Notification(
                "cert.revoked",
                "ev-7",
                "corr-7",
                {"subject_dn": "CN=web.example.com", "serial": "0a"},
            )
        )
    finally:
        await sink.stop()
    [message] = sink.messages
    assert sink.envelopes == [("certbus@example.com", ["pki@example.com", "sec@example.com"])]
    assert message["Subject"] == "[certbus] cert.revoked CN=web.example.com"
    assert (
        message["Message-ID"] == "<ev-7@certbus>"
        and message["X-Certbus-Correlation-Id"] == "corr-7"
    )
    assert json.loads(message.get_payload(decode=True)) == {
        "subject": "cert.revoked",
        "event": {"subject_dn": "CN=web.example.com", "serial": "0a"},
    }
