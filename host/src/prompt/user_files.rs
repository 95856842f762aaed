//! Files a request names in textgen's user data folder (characters, instruction templates,
//! presets): a bare name, looked up with each allowed extension, never a path; and their data.

use std::path::{Path, PathBuf};

/// The first `dir/NAME.EXT` that exists for `exts`, in order. `Err` when `name` is not a bare
/// name (empty, a path, or hidden), so a request cannot reach files outside `dir`.
pub fn find(dir: &Path, name: &str, exts: &[&str]) -> Result<Option<PathBuf>, String> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "`{name}` is not a name: names may not be empty, hold path separators or start with a dot"
        ));
    }
    Ok(exts.iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.is_file()))
}

/// A user file's data: `.json` files as JSON, anything else as YAML. `Err` says why it cannot
/// be read or parsed.
pub fn read_data(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    }
}
