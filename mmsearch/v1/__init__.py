"""Generated from protos/mmsearch/v1 by `make proto` (grpcio-tools). Do not edit the *_pb2* files."""
