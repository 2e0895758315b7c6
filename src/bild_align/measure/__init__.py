"""Measuring: metrics, significance, Pareto fronts, plots, the timing harness."""
