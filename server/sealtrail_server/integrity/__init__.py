"""Signed checkpoints of every tenant's log, and the key that signs them."""
