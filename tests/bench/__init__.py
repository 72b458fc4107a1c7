"""Benchmarks: run with ``make bench`` (all) or ``python -m tests.bench NAME ...``.

Each ``bench_*.py`` module has ``main() -> dict``; it prints its figures next to a baseline
measured in the same run and writes them to ``bench-results/<name>.json``.
"""
