//! Builds Hearth's first-party plugins (`plugins/`, for wasm32-wasip2) and embeds them in the
//! binary, so that `hearth` serves tool calls, moderation and token tools out of the box,
//! wherever it is run from and however it was installed (`cargo install --path host` too).
//!
//! The plugins build in `$CARGO_TARGET_DIR/wasm-plugins` (or `target/wasm-plugins`), the folder
//! `scripts/build-plugins` uses, so the two share one build. Without the wasm32-wasip2 target
//! the binary is built with no built-in plugins and says so when it starts (a warning here
//! names the fix), rather than failing the whole build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lies in the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let plugins = root.join("plugins");
    let members = workspace_members(&plugins.join("Cargo.toml"));

    for path in ["Cargo.toml", "Cargo.lock", "default.yaml"] {
        println!("cargo:rerun-if-changed={}", plugins.join(path).display());
    }
    for member in &members {
        println!("cargo:rerun-if-changed={}", plugins.join(member).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("plugin-sdk").display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let components = match build(&root, &plugins, &members) {
        Ok(built) => built,
        Err(why) => {
            println!("cargo:warning=hearth is built without its first-party plugins: {why}");
            println!("cargo:rustc-env=HEARTH_BUILTIN_PLUGINS_MISSING={}", why.replace(['\n', '\r'], " "));
            Vec::new()
        }
    };
    let mut table =
        String::from("/// The first-party plugins built into this binary: file name and component bytes.\n");
    table.push_str("pub(crate) static COMPONENTS: &[(&str, &[u8])] = &[\n");
    for (file, path) in &components {
        table.push_str(&format!("    ({file:?}, include_bytes!({:?})),\n", path.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), table).expect("OUT_DIR is writable");
}

/// The `members` of the plugins' workspace manifest.
fn workspace_members(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("plugins/Cargo.toml is readable");
    let doc: toml::Table = text.parse().expect("plugins/Cargo.toml is valid TOML");
    doc.get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .map(|m| m.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Builds the plugins' workspace and copies each member's component into `OUT_DIR`: their
/// file names and paths there.
fn build(root: &Path, plugins: &Path, members: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_dir = if target_dir.is_relative() { root.join(target_dir) } else { target_dir }.join("wasm-plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host's own build (e.g. `-C target-cpu=native`) do not apply to
        // WebAssembly.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| format!("cargo could not be run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            "the wasm32-wasip2 target is not installed (run `rustup target add wasm32-wasip2` and rebuild)".to_owned()
        } else {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            format!("building plugins/ failed: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        };
        return Err(hint);
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("plugins");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut built = Vec::new();
    for member in members {
        let file = format!("{}.wasm", member.replace('-', "_"));
        let from = target_dir.join("wasm32-wasip2").join("release").join(&file);
        let to = out_dir.join(&file);
        // A copy of its own: a later plugin build cannot change what this binary embeds.
        std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
        built.push((file, to));
    }
    Ok(built)
}
