"""Benchmarks: a full-size generated month through our pipeline, the tutorial's way, and the limits."""
