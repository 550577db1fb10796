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
- Record beside large batches (record-beside-batch): Record as above (same
  clients, calls in flight and events) of one tenant, while another tenant's
  client sends RecordBatch calls of 200 events of 3,000 small details (about
  10 MB a call) back to back, one in flight, from the same start. Its p50 and
  p99 over Record's, measured alone in the same round (the two alternate
  order), say what one tenant's large writes cost another's Record (the
  appender writes them in a lane of their own, ADR 0002's last addendum).
  Lower is better; no target. Its median round is the one of median p99. The
  batches' own rate (events and MB the database received in the window,
  since one call may outlast it), commits and answered calls are in its notes.

Issue 3's figures (signed checkpoints, proofs, VerifyLog, offline bundles),
each against a baseline of the same run and, where the issue sets one, an
absolute target that is reported (MISSED), never asserted:

- Record, proofs stored / Record, no proofs stored: Record as above, on the
  usual server and on a second one over the same database started with
  `serve --bench-no-tree-nodes` (target >= 0.90).
- GetInclusionProof: random seqs of a log of --integrity-events events
  (>= 10,000) at its checkpoint's size, as many in flight as Record; against
  the empty call, and >= 2,000 proofs/s.
- VerifyLog over that log / a raw read of its rows (server-side cursor, and
  hashlib SHA-256 of each record, in the bench process); >= 100,000 events/s.
- verify_bundle of a complete bundle of that log / raw hashlib SHA-256 of
  every line of the bundle's records and proofs; under 10 s. Writing the
  bundle (write_bundle: one Export, the proofs computed by the writer) is
  timed once too, against the raw read. `--skip bundlehash bundle` leaves
  both out.

Issue 4's figures (StreamEvents, Export), likewise:

- StreamEvents delivery: --subscribers (50) live StreamEvents calls on one
  tenant, each on its own connection, spread over --stream-clients processes,
  while one process records --stream-rate (1,000) events/s in RecordBatch
  calls of 50 started on a fixed schedule. Latency is each event's arrival at
  each subscriber minus its acknowledgement at the recorder, both time.time()
  on this machine, matched by seq; p50/p99 over every (subscriber, event)
  pair whose ack fell in the window, and whether every subscriber got every
  event. Baseline: the RecordBatch acks of the same window (stream-ack), the
  same server and load telling the writer rather than the readers. Target:
  p99 under 100 ms.
- Export / raw cursor CSV: one Export (CSV) of a log of --export-events
  (100,000) events, the client reading every chunk, against this process
  reading the same rows through a server-side cursor and writing them with the
  server's own CsvEncoder (target >= 0.60).

Issue 5's figure (tracing):

- Record, tracing on / Record, tracing off: Record as above from callers that
  send a sampled traceparent and an x-request-id with every call, on the usual
  server (no OTEL_* settings: no spans, but the ids still reach the events)
  and on a third server that traces every call (OTEL_TRACES_SAMPLER=always_on:
  server span, append span, batch commit span and statement spans) and exports
  over OTLP/gRPC to a sink in the bench process that only counts (target >=
  0.85). Its notes say how many of the window's calls the sink got a server
  span for, so spans dropped under load would show.

Every server of a run signs checkpoints with one key made for the run, and
keeps its data in the run's temp dir.

The server runs in its own process (its CPU and the load generator's never
share a GIL), over an embedded PostgreSQL in a temp dir unless
SEALTRAIL_BENCH_DATABASE_URL names a database to use.

Latency percentiles are nearest-rank: p95 is the least latency at or below
which 95% of the window's calls lie (of 100 calls the 95th fastest, of 10 the
slowest); the table shows p50, p95 and p99 of every figure that has them.
A figure whose work did not do what it should (a verification of an untouched
log that fails, an export short of its manifest) is FAILED: its ratios say
n/a, it is listed at the end, and the run exits 1. Ctrl-C or SIGTERM stops
the run's servers and embedded PostgreSQL and removes its temp dir.
"""

# Before grpc is imported: importing the server turns gRPC's fork support off,
# and the bench forks pg_ctl beside its gRPC clients (ADR 0030).
import sealtrail_server  # noqa: F401
