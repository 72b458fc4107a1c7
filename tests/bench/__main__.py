from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

import tests.bench as package
from tests.bench.common import RESULTS


def main(argv: list[str]) -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")
    )
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    summary, failed = {}, []
    for name in wanted:
        print(f"\n### {name}", flush=True)
        try:
            summary[name] = importlib.import_module(f"tests.bench.{name}").main()
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
    RESULTS.mkdir(exist_ok=True)
    Path(RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {RESULTS}/summary.json; failed: {failed or 'none'}")
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
