"""Sizes from forecasts, the baselines they are measured against, the replay and the plan."""
