"""Open Dental API v1: the client (paging, retries, errors) and row parsing."""
