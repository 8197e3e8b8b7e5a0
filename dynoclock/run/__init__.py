"""Executing runs: the runner, its worker pool, timer and watchdog (timeouts), and pings and alerts."""
