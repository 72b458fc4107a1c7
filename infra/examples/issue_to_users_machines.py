#!/usr/bin/env python3
"""Issue a certificate to each listed user's machines and install it in a named store.

certbus's version of "Script 1": for every user in the file, every device inventory knows
for that user gets the store (created if needed) and a certificate from the template. The key
is made on the machine by its agent and never leaves it.

    CERTBUS_URL=http://127.0.0.1:8080 python infra/examples/issue_to_users_machines.py \\
        --users users.txt --template user-client --store certs/source-control \\
        --alias source-control --wait
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from services.cli.sdk import Certbus, CertbusError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=Path, required=True, help="one user name per line")
    p.add_argument("--template", required=True)
    p.add_argument("--store", required=True, help="store path on each machine")
    p.add_argument("--store-type", default="pem", choices=["pem", "pkcs12", "jks"])
    p.add_argument("--alias", default=None, help="default: <template>-<user>")
    p.add_argument("--wait", action="store_true", help="wait until every certificate is installed")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)

    users = [u.strip() for u in args.users.read_text().splitlines() if u.strip()]
    sent: list[tuple[str, str, str]] = []
    with Certbus() as cb:
        for user in users:
            try:
                person = cb.identities.user(user)
            except CertbusError as exc:
                print(f"{user}: skipped ({exc.message})", file=sys.stderr)
                continue
            sans = [f"email:{person['email']}"] if person.get("email") else []
            for machine in person["devices"]:
                store = cb.stores.find(machine, args.store) or cb.stores.add(
                    machine, args.store, store_type=args.store_type)
                alias = args.alias or f"{args.template}-{user}"
                answer = cb.stores.enroll(store["id"], args.template, f"CN={user}", sans=sans,
                                          alias=alias, owner=user)
                sent.append((user, machine, answer["request_id"]))
                print(f"{user}\t{machine}\t{args.store}\t{alias}\trequest {answer['request_id']}")
        if args.wait:
            return wait_for_installs(cb, sent, args.store, args.timeout)
    return 0


def wait_for_installs(cb: Certbus, sent: list[tuple[str, str, str]], store: str,
                      timeout: float) -> int:
    deadline = time.monotonic() + timeout
    waiting = {(user, machine) for user, machine, _ in sent}
    while waiting and time.monotonic() < deadline:
        for user, machine in sorted(waiting):
            query = f'Owner -eq "{user}" AND Device -eq "{machine}" AND Store -eq "{store}"'
            if cb.certs.search(query, limit=1)["total"]:
                print(f"installed: {user} on {machine}")
                waiting.discard((user, machine))
        time.sleep(0.5)
    for user, machine in sorted(waiting):
        print(f"not installed yet: {user} on {machine}", file=sys.stderr)
    return 1 if waiting else 0


if __name__ == "__main__":
    sys.exit(main())
