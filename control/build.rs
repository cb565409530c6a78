//! Compiles `proto/` with protox (pure Rust, no protoc) and generates the tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["podswitch/v1/podswitch.proto"], ["proto"])?;
    // Serialize: `podswitchctl --json` prints the replies as they are.
    tonic_prost_build::configure().type_attribute(".", "#[derive(serde::Serialize)]").compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
