//! The example policy modules (`policies/examples/*`), built for the tests
//! and benchmarks that upload them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The example policies (`policies/examples/<name>`), by crate name.
pub const EXAMPLE_POLICIES: &[&str] = &[
    "attested-pcr0",
    "context-tenant",
    "time-window",
    "justification",
    "deletion-guard",
];

const TARGET: &str = "wasm32-unknown-unknown";

/// `policies/target/wasm32-unknown-unknown/release`, once the example
/// policies were built (once per process), or why they could not be.
static EXAMPLE_POLICY_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The repository root (this crate is `test-support/` in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support has a parent directory")
        .to_path_buf()
}

/// The WebAssembly module of example policy `name` (one of
/// [`EXAMPLE_POLICIES`]). The first call builds every example with
/// `cargo build --release --target wasm32-unknown-unknown` in `policies/`
/// (its own workspace and target dir, so no lock conflict with the cargo
/// running the tests); later calls only read the file. Blocks while building:
/// call it before starting a service.
pub fn example_policy(name: &str) -> Vec<u8> {
    assert!(
        EXAMPLE_POLICIES.contains(&name),
        "{name} is not an example policy ({EXAMPLE_POLICIES:?})"
    );
    let dir = match EXAMPLE_POLICY_DIR.get_or_init(build_example_policies) {
        Ok(dir) => dir,
        Err(why) => panic!("{why}"),
    };
    // Cargo names a cdylib after its crate, with `-` as `_`.
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn build_example_policies() -> Result<PathBuf, String> {
    let workspace = workspace_root().join("policies");
    let target_dir = workspace.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "--target", TARGET])
        // Its own target dir even if the outer build set another one.
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cargo:?} build in {}: {e}", workspace.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let missing_target = stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`");
        let hint = if missing_target {
            format!("the {TARGET} target is not installed: run `rustup target add {TARGET}`\n")
        } else {
            String::new()
        };
        return Err(format!(
            "{hint}building the example policies (`cargo build --release --locked --target {TARGET}` in {}) \
             failed with {}:\n{stderr}",
            workspace.display(),
            output.status
        ));
    }
    let dir = target_dir.join(TARGET).join("release");
    for name in EXAMPLE_POLICIES {
        let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
        if !path.is_file() {
            return Err(format!(
                "the example policy build succeeded but {} is missing",
                path.display()
            ));
        }
    }
    Ok(dir)
}
