"""Benchmarks that print numbers measured in one process (speed claims live here, not in tests)."""
