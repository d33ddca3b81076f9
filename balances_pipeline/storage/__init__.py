"""DuckDB: the working database, per-sync staging, SQL transforms and atomic publishing."""
