"""Staff changes: manual overrides, collection blocks and the account detail page."""
