"""Checks and preparation of the series: validation (Great Expectations), ranges, features."""
