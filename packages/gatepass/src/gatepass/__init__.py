"""Gatepass Python SDK."""
