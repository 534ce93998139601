"""Benchmarks and the dataset tools they use; each script runs with one command."""
