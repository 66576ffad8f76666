"""mmsearch public API package: generated gRPC/protobuf code lives in `mmsearch.v1`."""
