"""Data files: the JSON Schema of dump output (dump.schema.json)."""
