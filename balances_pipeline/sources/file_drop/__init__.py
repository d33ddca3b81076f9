"""Aging reports exported by any PMS (Dentrix, Eaglesoft, ...) and dropped as CSV files."""
