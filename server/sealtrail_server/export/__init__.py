"""Export formats: CSV, NDJSON and JSON encoders of stored records, in chunks."""
