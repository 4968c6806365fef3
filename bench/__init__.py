"""Benchmarks that print numbers (never timed tests): ``python -m bench`` runs them all."""
