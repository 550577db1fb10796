"""gRPC servicers: proto <-> domain translation and status mapping, nothing else."""
