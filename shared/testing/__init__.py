"""Helpers for tests and benchmarks: real servers on free ports, never the preinstalled ones."""
