//! Compiles the gRPC contract in `proto/sitrep/v1` with protox (a pure-Rust protobuf compiler, so no `protoc` install
//! is needed) and generates prost messages and tonic clients and servers from the resulting descriptors. The encoded
//! descriptor set is kept too: the server offers it through gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is built: a build script shared through a target directory by several
    // checkouts (worktrees) must compile the checkout that runs it.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "sitrep/v1/common.proto",
        "sitrep/v1/provider.proto",
        "sitrep/v1/subscriber.proto",
        "sitrep/v1/query.proto",
        "sitrep/v1/aid.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sitrep_descriptor.bin"), fds.encode_to_vec())?;
    // A report's values decode into a BTreeMap: no hashing of every metric code on the ingest path (SipHash showed in
    // profiles), and they come out in code order, as the core keeps them.
    // The services use `codec::Codec`: prost's, but undecodable messages are INVALID_ARGUMENT (see src/lib.rs).
    tonic_prost_build::configure()
        .btree_map(".sitrep.v1.StatusReport.values")
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
