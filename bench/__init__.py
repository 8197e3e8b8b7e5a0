"""Benchmarks of the clock against a plain APScheduler 3.11 script (see bench/README.md)."""
