"""Live tails: the per-process hub that fans committed events out to subscribers."""
