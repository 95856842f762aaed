//! Files a request names in textgen's user data folder (characters, instruction templates):
//! a bare name, looked up with each allowed extension, never a path.

use std::path::{Path, PathBuf};

/// The first `dir/NAME.EXT` that exists for `exts`, in order. `Err` when `name` is not a bare
/// name (empty, a path, or hidden), so a request cannot reach files outside `dir`.
pub fn find(dir: &Path, name: &str, exts: &[&str]) -> Result<Option<PathBuf>, String> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(format!("`{name}` is not a name: names may not be empty, hold path separators or start with a dot"));
    }
    Ok(exts.iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.is_file()))
}
