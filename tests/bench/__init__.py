"""Benchmarks: run as modules (`python -m tests.bench.ipam_scale`), never collected by pytest."""
