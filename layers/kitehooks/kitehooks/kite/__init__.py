"""Kite Connect over HTTP: the API client with its deadlines, and the checksums Kite signs with."""
