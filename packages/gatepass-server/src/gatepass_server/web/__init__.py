"""The HTTP layer: parse, authenticate, call a service, render. Nothing else."""
