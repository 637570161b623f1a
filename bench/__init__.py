"""Benchmarks (`make bench`): figures printed side by side from one run, never asserted."""
