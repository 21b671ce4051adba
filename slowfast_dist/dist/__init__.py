"""Distributed start-up: launcher detection, init_distributed(), PySlowFast-style spawn."""
