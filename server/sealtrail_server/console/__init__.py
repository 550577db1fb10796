"""The web console (docs/console.md): a page and a JSON API over the gRPC service."""
