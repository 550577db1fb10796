"""Sealtrail's throughput benchmark: `make bench` (= `python -m bench`).

Every figure is measured in the same run on the same machine and reported as
a ratio to a baseline measured alongside it, never as an absolute gate:

- empty call: gRPC health Check on the Sealtrail server itself, with the same
  client processes, channel, metadata and calls in flight as Record. It is
  what the server's gRPC stack alone can answer, so Record / empty call says
  how much of that the whole durable Record path keeps (target >= 0.50).
- Record: one realistic event per call, answered only after its commit.
- raw COPY: psycopg COPY of equivalent rows into the same events table, in
  transactions of one batch each: what the database ingests with no service
  in front of it, so RecordBatch / raw COPY says how much of that the
  service keeps (target >= 0.40).
- RecordBatch: batches of realistic events, a few calls in flight.

The server runs in its own process (its CPU and the load generator's never
share a GIL), over an embedded PostgreSQL in a temp dir unless
SEALTRAIL_BENCH_DATABASE_URL names a database to use.
"""
