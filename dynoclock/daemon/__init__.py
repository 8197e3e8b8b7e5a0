"""The clock process: the scheduler's wiring, slot claims, leadership, housekeeping, and signals."""
