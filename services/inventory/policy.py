"""The provisioning policy: from a user's attributes to what each of their devices gets."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.events import StoreType, check_file_name, is_store_type

FIELDS = (
    "store_type", "store_path", "alias", "subject", "sans", "key_type", "key",
    "cert_file", "key_file", "chain_file",
)  # fmt: skip
# The names of a PEM directory's files: placeholders as elsewhere, plus {alias}.
PEM_FILES = {
    "cert_file": "{alias}.crt",
    "key_file": "{alias}.key",
    "chain_file": "{alias}.chain.pem",
}
PLACEHOLDERS = frozenset({"user", "email", "department", "device", "template", "alias"})

BUILTIN_DEFAULTS: dict[str, Any] = {
    "store_type": "pem",
    "store_path": "certs/{template}",
    "alias": "{template}-{user}",
    "subject": "CN={user}",
    "sans": ["email:{email}"],
    "key_type": "ec-p256",
    "key": "device",
    **PEM_FILES,
}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Person:
    user: str
    email: str | None = None
    department: str | None = None
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provision:
    """One certificate one device should hold."""

    template: str
    device: str
    store_type: StoreType
    store_path: str
    alias: str
    subject_dn: str
    sans: tuple[str, ...]
    key_type: str
    key: str
    rule: str
    cert_file: str = ""
    key_file: str = ""
    chain_file: str = ""

    def file_names(self) -> dict[str, str]:
        """The PEM file names a store target must carry: none when they are the usual ones."""
        names = {
            "cert_file": self.cert_file,
            "key_file": self.key_file,
            "chain_file": self.chain_file,
        }
        usual = {f: t.format(alias=self.alias) for f, t in PEM_FILES.items()}
        return {} if self.store_type != "pem" or names == usual else names


@dataclass(frozen=True)
class Rule:
    name: str
    departments: frozenset[str] | None
    roles: frozenset[str] | None
    provision: tuple[dict[str, Any], ...]

    def matches(self, person: Person) -> bool:
        if self.departments is not None and (person.department or "") not in self.departments:
            return False
        return self.roles is None or bool(self.roles & set(person.roles))


@dataclass
class Policy:
    rules: list[Rule]
    defaults: dict[str, Any] = field(default_factory=lambda: dict(BUILTIN_DEFAULTS))
    auto_fix_drift: bool = False
    auto_approve_agents: list[str] = field(default_factory=list)
    auto_approve_known_devices: bool = True

    def provisions(self, person: Person, devices: list[str]) -> list[Provision]:
        """Every (device, template) the person should have, each once, in policy order."""
        out: dict[tuple[str, str], Provision] = {}
        for rule in self.rules:
            if not rule.matches(person):
                continue
            for entry in rule.provision:
                for device in devices:
                    p = self._render(rule, entry, person, device)
                    out.setdefault((device, p.template), p)
        return list(out.values())

    def _render(self, rule: Rule, entry: dict[str, Any], person: Person, device: str) -> Provision:
        spec = {**self.defaults, **entry}
        values = {
            "user": person.user,
            "email": person.email,
            "department": person.department,
            "device": device,
            "template": spec["template"],
        }
        sans = tuple(s for s in (_fill(v, values) for v in spec.get("sans") or []) if s)
        values["alias"] = _fill(spec["alias"], values) or spec["template"]
        files = {f: _fill(spec[f], values) or _fill(t, values) or "" for f, t in PEM_FILES.items()}
        return Provision(
            template=spec["template"],
            device=device,
            store_type=spec["store_type"],
            store_path=_fill(spec["store_path"], values) or "",
            alias=values["alias"],
            subject_dn=_fill(spec["subject"], values) or f"CN={person.user}",
            sans=sans,
            key_type=spec["key_type"],
            key=spec["key"],
            rule=rule.name,
            cert_file=files["cert_file"],
            key_file=files["key_file"],
            chain_file=files["chain_file"],
        )


def _fill(template: str, values: dict[str, Any]) -> str | None:
    """Fill placeholders; ``None`` when one of them has no value."""
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    if any(values.get(n) in (None, "") for n in names):
        return None
    return template.format(**{n: values[n] for n in names})


def _names(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


def _check_file_names(where: str, spec: dict[str, Any]) -> None:
    """Refuse PEM file names that are not plain names in the store directory, or that clash."""
    samples = []
    for field_name in PEM_FILES:
        template = spec[field_name]
        if not isinstance(template, str):
            raise PolicyError(f"{where}: {field_name} must be a file name, got {template!r}")
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise PolicyError(f"{where}: {field_name} {template!r}: {exc}") from exc
        unknown = sorted(set(names) - PLACEHOLDERS)
        if unknown:
            raise PolicyError(
                f"{where}: {field_name} {template!r} uses unknown placeholder(s) {unknown}; "
                f"known: {sorted(PLACEHOLDERS)}"
            )
        sample = template.format(**{n: n for n in names})
        try:
            check_file_name(sample)
        except ValueError as exc:
            raise PolicyError(f"{where}: {field_name} {template!r}: {exc}") from exc
        samples.append(sample)
    if len(set(samples)) < len(samples):
        raise PolicyError(
            f"{where}: cert_file, key_file and chain_file must name three different files"
        )


def parse(data: dict[str, Any]) -> Policy:
    defaults = {**BUILTIN_DEFAULTS, **(data.get("defaults") or {})}
    _check_file_names("defaults", defaults)
    rules = []
    for i, raw in enumerate(data.get("rules") or []):
        match = raw.get("match") or {}
        unknown = set(match) - {"department", "roles"}
        if unknown:
            raise PolicyError(f"rule {i}: cannot match on {sorted(unknown)}")
        entries = tuple(raw.get("provision") or [])
        for entry in entries:
            if "template" not in entry:
                raise PolicyError(f"rule {raw.get('name', i)}: every provision names a template")
            store_type = entry.get("store_type", defaults["store_type"])
            if not is_store_type(store_type):
                raise PolicyError(f"rule {raw.get('name', i)}: unknown store type")
            where = f"rule {raw.get('name', i)}, template {entry['template']}"
            named = sorted(set(entry) & set(PEM_FILES))
            if named and store_type != "pem":
                raise PolicyError(
                    f"{where}: {', '.join(named)} can only name the files of a PEM directory, "
                    f"not of a {store_type} store"
                )
            _check_file_names(where, {**defaults, **entry})
        rules.append(
            Rule(
                name=str(raw.get("name") or f"rule-{i}"),
                departments=_names(match.get("department")),
                roles=_names(match.get("roles")),
                provision=entries,
            )
        )
    return Policy(
        rules=rules,
        defaults=defaults,
        auto_fix_drift=bool((data.get("drift") or {}).get("auto_fix", False)),
        auto_approve_agents=list((data.get("agents") or {}).get("auto_approve") or []),
        auto_approve_known_devices=bool((data.get("agents") or {}).get("known_devices", True)),
    )


def load(path: Path) -> Policy:
    return parse(yaml.safe_load(path.read_text()) or {})
