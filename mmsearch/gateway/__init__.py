"""HTTP/JSON gateway and web console in front of the gRPC services."""
