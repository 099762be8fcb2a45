//! `dir://PATH`: the embedded store, a directory on the local disk.
//!
//! Guarantees match S3 with conditional writes, across threads and processes:
//! - every write goes to `.tmp/` and is renamed into place, so a crash never leaves a
//!   half-written object under its key;
//! - create-only and compare-and-swap puts run under an exclusive `flock` on one of 256 lock
//!   files chosen by the key's hash, so the check and the rename are one step;
//! - keys are [`StoreKey`]s, which cannot name anything outside the root, and the root's own
//!   bookkeeping lives in `.`-prefixed entries that keys cannot reach.
//!
//! ETags are the sha256 of the content (for `blobs/sha256/<hex>`, the hex itself).

use std::fs::{self, File, OpenOptions as FsOpen};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bytes::Bytes;
use falaj_core::{AllowedRegions, StoreKey};
use sha2::{Digest, Sha256};

use super::{
    BlobInfo, BlobSource, ETag, ListPage, Object, Precondition, Progress, Store, StoreError,
};

const TMP: &str = ".tmp";
const LOCKS: &str = ".locks";
const META: &str = ".falaj-store.json";

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
    uri: String,
    region: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoreMeta {
    region: String,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl DirStore {
    /// Opens the store at `root`, creating it if `create` is set.
    ///
    /// A new store records the first allowed region as where it lives; an existing store in a
    /// region outside `allowed` is refused.
    pub fn open(root: PathBuf, create: bool, allowed: &AllowedRegions) -> Result<Self, StoreError> {
        let uri = format!("dir://{}", root.display());
        let meta_path = root.join(META);
        if !root.exists() {
            if !create {
                return Err(StoreError::Missing {
                    uri,
                    hint: "the directory does not exist; create a model first (`falaj model create NAME`) or pass --store with an existing store".into(),
                });
            }
            fs::create_dir_all(&root).map_err(io_err("cannot create store directory", &root))?;
        }
        if !root.is_dir() {
            return Err(StoreError::Missing {
                uri,
                hint: "the path exists but is not a directory".into(),
            });
        }
        let region = match fs::read(&meta_path) {
            Ok(b) => {
                serde_json::from_slice::<StoreMeta>(&b)
                    .map_err(|e| StoreError::Io {
                        what: "corrupt store metadata",
                        path: meta_path.clone(),
                        source: io::Error::new(io::ErrorKind::InvalidData, e),
                    })?
                    .region
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let region = allowed
                    .regions()
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "me-central-1".into());
                fs::create_dir_all(root.join(TMP)).map_err(io_err("cannot create", &root))?;
                let meta = serde_json::to_vec_pretty(&StoreMeta {
                    region: region.clone(),
                })
                .expect("meta serialises");
                let store = Self {
                    root: root.clone(),
                    uri: uri.clone(),
                    region: region.clone(),
                };
                store.atomic_write(&meta_path, &meta)?;
                region
            }
            Err(e) => return Err(io_err("cannot read", &meta_path)(e)),
        };
        allowed.check(&format!("store {uri}"), &region)?;
        for d in [TMP, LOCKS] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("cannot create", &root))?;
            if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(StoreError::Symlink { path: p });
            }
        }
        Ok(Self { root, uri, region })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file for `key`, refusing a key that runs through a symbolic link below the root
    /// (a link could lead a read or a write outside the store).
    fn path(&self, key: &StoreKey) -> Result<PathBuf, StoreError> {
        let mut p = self.root.clone();
        for seg in key.segments() {
            p.push(seg);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StoreError::Symlink { path: p });
                }
                Ok(_) => {}
                // Nothing below a missing entry can be a link.
                Err(_) => {
                    let rest: Vec<_> = key.segments().collect();
                    let mut full = self.root.clone();
                    full.extend(rest);
                    return Ok(full);
                }
            }
        }
        Ok(p)
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(TMP)
            .join(format!("{:032x}", rand::random::<u128>()))
    }

    fn lock(&self, key: &StoreKey) -> Result<File, StoreError> {
        let stripe = Sha256::digest(key.as_str().as_bytes())[0];
        let path = self.root.join(LOCKS).join(format!("{stripe:02x}"));
        let f = FsOpen::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open lock file", &path))?;
        f.lock().map_err(io_err("cannot lock", &path))?;
        Ok(f)
    }

    /// Writes `bytes` to a temporary file, syncs it and renames it over `dest`.
    fn atomic_write(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.temp_path();
        let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
        f.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        f.sync_all().map_err(io_err("cannot sync", &tmp))?;
        drop(f);
        self.rename_into(&tmp, dest)
    }

    fn rename_into(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create directory", parent))?;
        }
        fs::rename(tmp, dest).map_err(|e| {
            let _ = fs::remove_file(tmp);
            io_err("cannot move into place", dest)(e)
        })
    }

    fn etag_of(key: &StoreKey, bytes: &[u8]) -> ETag {
        match key.as_str().strip_prefix("blobs/sha256/") {
            Some(hex) => ETag(hex.to_string()),
            None => ETag(hex::encode(Sha256::digest(bytes))),
        }
    }

    fn read(&self, key: &StoreKey) -> Result<Option<Object>, StoreError> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(b) => {
                let etag = Self::etag_of(key, &b);
                Ok(Some(Object {
                    bytes: Bytes::from(b),
                    etag,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A directory where an object is expected (`a` when `a/b` exists) reads as absent.
            Err(_) if path.is_dir() => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    fn put_sync(
        &self,
        key: &StoreKey,
        bytes: &[u8],
        pre: &Precondition,
    ) -> Result<ETag, StoreError> {
        let _guard = self.lock(key)?;
        let dest = self.path(key)?;
        if *pre != Precondition::None {
            let current = self.read(key)?.map(|o| o.etag);
            let holds = match (pre, &current) {
                (Precondition::IfAbsent, None) => true,
                (Precondition::IfMatch(want), Some(have)) => want == have,
                _ => false,
            };
            if !holds {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    current,
                });
            }
        }
        self.atomic_write(&dest, bytes)?;
        Ok(Self::etag_of(key, bytes))
    }

    fn list_sync(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        // Walk only below the deepest directory the prefix names.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if dir_part.split('/').any(|s| s == ".." || s.starts_with('.')) {
            return Ok(ListPage::default());
        }
        let mut keys = Vec::new();
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        walk(&start, dir_part, &mut keys)?;
        keys.retain(|k| k.starts_with(prefix) && start_after.is_none_or(|a| k.as_str() > a));
        keys.sort();
        let next = if keys.len() > limit {
            Some(keys[limit - 1].clone())
        } else {
            None
        };
        keys.truncate(limit);
        Ok(ListPage { keys, next })
    }

    fn put_blob_sync(&self, src: BlobSource, progress: Progress) -> Result<BlobInfo, StoreError> {
        let mut reader: Box<dyn Read + Send> = match src {
            BlobSource::File(p) => Box::new(File::open(&p).map_err(io_err("cannot open", &p))?),
            BlobSource::Reader(r) => r,
        };
        let tmp = self.temp_path();
        let mut out = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
        // Three threads, one pass, each at its own speed: a reader reads ahead into recycled
        // buffers, this thread hashes, a writer writes and starts each chunk's writeback at
        // once, so the fsync at the end finds little left to flush. The buffers go round a
        // fixed pool, so memory stays at POOL chunks whatever the blob's size.
        const POOL: usize = 4;
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(POOL);
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(POOL);
        let (write_tx, write_rx) = mpsc::sync_channel::<Vec<u8>>(POOL);
        for _ in 0..POOL {
            free_tx.send(Vec::new()).expect("the pool has room");
        }
        let reader = std::thread::spawn(move || -> Result<(), StoreError> {
            for mut buf in free_rx {
                super::fill_chunk(&mut *reader, &mut buf)?;
                let end = buf.len() < super::CHUNK;
                if !buf.is_empty() && full_tx.send(buf).is_err() {
                    return Ok(()); // the hasher stopped; its error is reported
                }
                if end {
                    return Ok(());
                }
            }
            Ok(())
        });
        let tmp_w = tmp.clone();
        let writer = std::thread::spawn(move || -> Result<File, StoreError> {
            let mut offset = 0u64;
            for buf in write_rx {
                out.write_all(&buf)
                    .map_err(io_err("cannot write", &tmp_w))?;
                start_writeback(&out, offset, buf.len());
                offset += buf.len() as u64;
                // Back to the pool; the reader may have finished, and then no one needs it.
                let _ = free_tx.send(buf);
            }
            out.sync_all().map_err(io_err("cannot sync", &tmp_w))?;
            Ok(out)
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for buf in full_rx {
            hasher.update(&buf);
            size += buf.len() as u64;
            progress(size);
            if write_tx.send(buf).is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        drop(write_tx);
        let panicked = |_| StoreError::Blob {
            reason: "a blob thread panicked".into(),
        };
        let read_result = reader.join().map_err(panicked)?;
        let written = writer.join().map_err(panicked)?;
        if let Err(e) = read_result.and(written.map(drop)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let hex = hex::encode(hasher.finalize());
        let key = falaj_core::layout::blob(&hex);
        let _guard = self.lock(&key)?;
        let dest = self.path(&key)?;
        if dest.exists() {
            let _ = fs::remove_file(&tmp);
            return Ok(BlobInfo {
                hex,
                size,
                created: false,
            });
        }
        self.rename_into(&tmp, &dest)?;
        Ok(BlobInfo {
            hex,
            size,
            created: true,
        })
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `f` to disk now, without
/// waiting (Linux `sync_file_range`); the fsync that follows waits for them. Elsewhere, and
/// where the file system refuses, a no-op: the fsync then writes everything.
fn start_writeback(f: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                f.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(());
        }
        Err(e) => return Err(io_err("cannot list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let key = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(io_err("cannot stat", &entry.path()))?;
        if ft.is_dir() {
            walk(&entry.path(), &key, out)?;
        } else if ft.is_file() {
            out.push(key);
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Blob {
            reason: format!("store task failed: {e}"),
        })?
}

#[async_trait::async_trait]
impl Store for DirStore {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn get(&self, key: &StoreKey) -> Result<Option<Object>, StoreError> {
        let (s, k) = (self.clone(), key.clone());
        blocking(move || s.read(&k)).await
    }

    async fn put(
        &self,
        key: &StoreKey,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<ETag, StoreError> {
        let (s, k) = (self.clone(), key.clone());
        blocking(move || s.put_sync(&k, &bytes, &pre)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let (s, p, a) = (
            self.clone(),
            prefix.to_string(),
            start_after.map(String::from),
        );
        blocking(move || s.list_sync(&p, a.as_deref(), limit.max(1))).await
    }

    async fn put_blob(&self, src: BlobSource, progress: Progress) -> Result<BlobInfo, StoreError> {
        let s = self.clone();
        blocking(move || s.put_blob_sync(src, progress)).await
    }

    async fn expire_claim(&self, key: &StoreKey) -> Result<bool, StoreError> {
        if !key.as_str().starts_with("idempotency/") {
            return Ok(false);
        }
        let (s, k) = (self.clone(), key.clone());
        blocking(move || {
            let _guard = s.lock(&k)?;
            let path = s.path(&k)?;
            match fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err("cannot remove", &path)(e)),
            }
        })
        .await
    }
}
