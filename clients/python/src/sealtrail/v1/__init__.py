"""Generated protobuf and gRPC modules of the sealtrail.v1 contract (`make proto`)."""
