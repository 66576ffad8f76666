"""The local stack: real tritonserver, a Kafka-protocol broker (Tansu) and
`mmsearch serve --target all`, on loopback ports. Used by `make up/down`, the
demo, and the test fixtures (which start the same processes on free ports)."""
