"""Use cases: one module per family, over storage protocols and domain values."""
