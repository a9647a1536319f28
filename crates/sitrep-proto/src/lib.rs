//! The sitrep wire contract, generated from `proto/sitrep/v1/*.proto` at build time.
//!
//! # Layout
//! - [`v1`]: messages, and the clients and servers of `ProviderService`, `SubscriberService` and `QueryService`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of the contract, served through gRPC reflection.
//!
//! Only `sitrep-server` and `sitrep-cli` (and tests) depend on this crate: wire types stay at the edges.

/// Package `sitrep.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sitrep.v1");
}

/// The encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sitrep_descriptor");
