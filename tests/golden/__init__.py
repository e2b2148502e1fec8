"""Golden files and a synthetic-trace builder for the output-layer tests."""
