"""Dagster only: assets, checks, resources (thin wrappers around sources/, sync/, warehouse/)."""
