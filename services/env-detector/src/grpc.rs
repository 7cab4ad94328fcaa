//! gRPC adapter.
