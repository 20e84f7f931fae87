//! The `tandem.v1` gRPC API, generated from `proto/tandem/v1/search.proto`.
//!
//! Server and client code come from tonic; messages from prost. [`FILE_DESCRIPTOR_SET`] is the
//! encoded descriptor set that the server hands to gRPC reflection.

#![warn(missing_docs)]

/// Generated code of the `tandem.v1` package.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("tandem.v1");
}

/// The encoded `FileDescriptorSet` of `tandem/v1/search.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tandem_descriptor.bin"));
