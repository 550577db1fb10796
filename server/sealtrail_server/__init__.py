"""Sealtrail server: an append-only, tamper-evident audit log over gRPC and PostgreSQL."""

import os

__version__ = "0.1.0"

# gRPC's fork support runs handlers in every child a fork() makes, and a child
# forked while gRPC's threads are busy can crash in them before it executes
# anything. The server forks for one thing, to run the embedded PostgreSQL's
# pg_ctl as its own user, and never uses gRPC in a child; so fork support is
# off unless the environment says otherwise (ADR 0030). It must be set before
# grpc is first imported, which is why it is here.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
