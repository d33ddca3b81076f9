"""Connectors: plain Python clients that read a practice's EHR/PMS and yield validated pages."""
