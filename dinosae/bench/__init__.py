"""Benchmarks that ship with the package, so that ``dinosae bench`` works from an install."""
