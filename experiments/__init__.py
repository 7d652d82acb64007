"""Experiment files (*.toml here) and the runner that executes them on the testbed."""
