//! Crash-safe files for the node's cache: write a sibling temporary file, sync, rename.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `dest` so a reader (or a restart after a crash) sees the old file or the
/// new one, never a part.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dest)
}
