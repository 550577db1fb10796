"""Background jobs that bring rows written by an earlier release up to what
this one writes (ADR 0143)."""
