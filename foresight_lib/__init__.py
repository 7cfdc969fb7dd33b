"""Foresight: batch forecasting of container and server resource usage.

The library every pipeline task calls. It never imports Airflow.
"""
from __future__ import annotations

__version__ = "0.1.0"
