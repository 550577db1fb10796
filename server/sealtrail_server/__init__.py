"""Sealtrail server: an append-only, tamper-evident audit log over gRPC and PostgreSQL."""

__version__ = "0.1.0"
