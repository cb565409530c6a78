//! The generated gRPC types and services (`proto/podswitch/v1/podswitch.proto`).
#![allow(missing_docs, clippy::all)]

/// Package `podswitch.v1`.
pub mod v1 {
    tonic::include_proto!("podswitch.v1");
}
