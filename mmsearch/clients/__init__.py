"""Typed clients between services (embedder, reranker), space resolution,
the errors a dependency can fail with, and how a user's tools connect."""
