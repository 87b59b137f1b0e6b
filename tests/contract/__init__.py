"""Contract checks: HTTP exchanges with the vendor emulators validated against the vendors' OpenAPI files."""
