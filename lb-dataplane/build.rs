//! Builds the XDP object (lb-ebpf) with the nightly toolchain and bpf-linker,
//! so a plain `cargo build` of the controller also builds the kernel side.
//! The object lands in OUT_DIR and is embedded by `dataplane::loader`.
use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../lb-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("{}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to lb-ebpf")?;
    println!("cargo:rerun-if-changed=../lb-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the XDP program failed; run `cargo xtask setup` first \
         (it installs rust-src for nightly and bpf-linker)",
    )?;
    // With AYA_BUILD_SKIP=1 (pure-logic work without the eBPF toolchain) no
    // object is built: leave an empty one, which the loader refuses by name.
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    for name in ["lb-ebpf", "xlb-aux", "xlb-decap"] {
        let object = Path::new(&out_dir).join(name);
        if !object.exists() {
            std::fs::write(&object, b"").context("writing an empty placeholder object")?;
        }
    }
    Ok(())
}
