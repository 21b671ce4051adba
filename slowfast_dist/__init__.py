"""slowfast-dist: distributed SlowFast training for AVA, and tools to measure how it scales."""

__version__ = "0.1.0"
