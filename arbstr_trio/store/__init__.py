"""The request log: its schema, the one writer task, and the read queries."""
