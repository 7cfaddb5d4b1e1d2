//! Writes the CRD YAML of every Veritas resource into `fixtures/manifests/crds/`
//! (or the directory given as the only argument). `tests/crd_drift.rs` fails when the
//! committed files differ from what this writes.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(veritas_crds::crdgen::DIR),
    };
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in veritas_crds::crdgen::render()? {
        let path = dir.join(name);
        std::fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
