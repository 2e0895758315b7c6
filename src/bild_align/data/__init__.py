"""Benchmarks and their rows: tasks, prompts, the offline gettext corpus, calibration data."""
