"""Run folders, locks, the publish transaction, MLflow, and what Prometheus reads."""
