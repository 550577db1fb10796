"""API tokens, roles and the binding of each call to one tenant."""
