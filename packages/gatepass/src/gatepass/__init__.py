"""Gatepass Python SDK.

The API clients, ``authenticate_request`` and the framework integrations arrive with the
SDK work; for now the package reserves its name and version.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
