"""The service kit shared by every mmsearch service: configuration, logging,
metrics, tracing, errors, authentication, health and the gRPC server bootstrap."""
