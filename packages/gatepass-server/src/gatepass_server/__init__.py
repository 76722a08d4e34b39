"""Gatepass server: Clerk-compatible machine-to-machine authentication."""
