#!/usr/bin/env python3
"""Find every certificate issued to the listed users or present on their machines, and revoke
it with a reason and a comment.

certbus's version of "Script 2". Machines are the users' devices as inventory knows them, plus
any listed in --machines.

    CERTBUS_URL=http://127.0.0.1:8080 python infra/examples/revoke_users_certificates.py \\
        --users leavers.txt --reason cessationOfOperation --comment "left the division" --dry-run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli.sdk import Certbus, CertbusError


def lines(path: Path | None) -> list[str]:
    return [x.strip() for x in path.read_text().splitlines() if x.strip()] if path else []


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=Path, required=True, help="one user name per line")
    p.add_argument("--machines", type=Path, help="more machine names, one per line")
    p.add_argument("--reason", default="cessationOfOperation", help="RFC 5280 name or 0-10")
    p.add_argument("--comment", required=True)
    p.add_argument("--dry-run", action="store_true", help="show what would be revoked")
    args = p.parse_args(argv)

    users, machines = lines(args.users), set(lines(args.machines))
    found: dict[str, str] = {}
    with Certbus() as cb:
        for user in users:
            for cert in cb.certs.search_all(f"Owner -eq {quoted(user)} AND Status -ne revoked"):
                found[cert["id"]] = f"issued to {user}"
            try:
                machines.update(cb.identities.user(user)["devices"])
            except CertbusError:
                pass
        for machine in sorted(machines):
            query = f"Device -eq {quoted(machine)} AND Status -ne revoked"
            for cert in cb.certs.search_all(query):
                found.setdefault(cert["id"], f"present on {machine}")
        for cert_id, why in sorted(found.items()):
            print(f"{cert_id}\t{why}")
        if not found:
            print("nothing to revoke")
            return 0
        result = cb.revocation.revoke_many(sorted(found), reason=args.reason,
                                           comment=args.comment, dry_run=args.dry_run)
    print(("would revoke: " if args.dry_run else "revoked: ") + str(result.get("counts", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
