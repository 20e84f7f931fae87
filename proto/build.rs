//! Compiles `tandem/v1/search.proto` with protox (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates the prost messages and tonic client/server from the result.
//! The encoded descriptor set is kept in OUT_DIR for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "tandem/v1/search.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tandem_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
