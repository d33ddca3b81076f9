"""One practice's sync, step by step: extract → balances → overrides → summary, then publish."""
