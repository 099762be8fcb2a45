//! falaj-store: object stores, the registry's only database.
//!
//! A [`Store`] offers what the registry needs and no more: get with an ETag, create-only
//! put (`If-None-Match: *`), compare-and-swap put (`If-Match`), paginated listing, and a
//! streaming, content-addressed blob upload. There is no delete: version records, audit
//! events and blobs are written once and kept (only expired idempotency claims go, see
//! [`Store::expire_claim`]).
//!
//! It depends on `falaj-core` alone, so the edge node and the trainer read and write the
//! store without linking the registry, the gates or the CLI.
//!
//! Two backends share these semantics: [`dir::DirStore`] (`dir://PATH`, the embedded default)
//! and [`s3::S3Store`] (`s3://bucket/prefix`). [`open`] picks one from a URI.
#![deny(missing_docs)]

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use falaj_core::layout::KeyError;
use falaj_core::{AllowedRegions, ResidencyError, StoreKey};

pub mod dir;
pub mod s3;

/// Opaque version tag of an object, compared by the store on conditional writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ETag(pub String);

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object's bytes and ETag.
#[derive(Debug, Clone)]
pub struct Object {
    /// Content.
    pub bytes: Bytes,
    /// ETag at the time of reading.
    pub etag: ETag,
}

/// What a conditional read found.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// No such object.
    Absent,
    /// Its ETag is still the one given: nothing was transferred.
    Unchanged,
    /// The object (changed, or read without an ETag).
    Changed(Object),
}

/// Condition on a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// Create only: fail if the key exists (`If-None-Match: *`).
    IfAbsent,
    /// Compare-and-swap: fail unless the current ETag is this one (`If-Match`).
    IfMatch(ETag),
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Keys in lexicographic order.
    pub keys: Vec<String>,
    /// Pass as `start_after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Where a blob's bytes come from.
pub enum BlobSource {
    /// A local file.
    File(PathBuf),
    /// Any reader (an object being re-read from the store, a network stream).
    Reader(Box<dyn Read + Send>),
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobInfo {
    /// Hex sha256 of the content; the blob is at `blobs/sha256/<hex>`.
    pub hex: String,
    /// Size in bytes.
    pub size: u64,
    /// `false` when an identical blob was already stored (nothing was written).
    pub created: bool,
}

/// Called with the number of bytes read so far during a blob upload.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A [`Progress`] that reports nowhere.
pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

/// Size of the chunks blobs are streamed in; bounded queues of these bound memory.
pub const CHUNK: usize = 8 * 1024 * 1024;

/// Reads up to [`CHUNK`] bytes from `r`; a short (or empty) chunk means the source ended.
pub(crate) fn read_chunk(r: &mut dyn Read) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    fill_chunk(r, &mut buf)?;
    Ok(buf)
}

/// Reads up to [`CHUNK`] bytes from `r` into `buf`, reusing its allocation (a recycled buffer
/// is not faulted in again); a short (or empty) chunk means the source ended.
pub(crate) fn fill_chunk(r: &mut dyn Read, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    buf.resize(CHUNK, 0);
    let mut filled = 0;
    while filled < CHUNK {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StoreError::Blob {
                    reason: format!("reading the source failed: {e}"),
                });
            }
        }
    }
    buf.truncate(filled);
    Ok(())
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The precondition of a put did not hold.
    #[error("conflict on {key}: it was changed by someone else (current etag: {})", current.as_ref().map_or("none".to_string(), |e| e.0.clone()))]
    Conflict {
        /// The key.
        key: String,
        /// The ETag found, if the object exists.
        current: Option<ETag>,
    },
    /// Local I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The store does not exist.
    #[error("no store at {uri}: {hint}")]
    Missing {
        /// URI given.
        uri: String,
        /// How to fix it.
        hint: String,
    },
    /// The store URI is malformed.
    #[error("invalid store URI {uri:?}: {reason} (use dir://PATH or s3://BUCKET[/PREFIX])")]
    InvalidUri {
        /// URI given.
        uri: String,
        /// Why.
        reason: String,
    },
    /// An object event for a key outside this store's prefix (the bucket holds other data).
    #[error("{uri} is outside this store's prefix {prefix}/")]
    OutsidePrefix {
        /// `s3://bucket/key` of the object.
        uri: String,
        /// The store's prefix.
        prefix: String,
    },
    /// A key failed validation.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The store is outside the allowed regions.
    #[error(transparent)]
    Residency(#[from] ResidencyError),
    /// The S3 server does not honour conditional writes.
    #[error(
        "the S3 server at {endpoint} does not honour conditional writes ({detail}); falaj refuses it, because without If-None-Match/If-Match concurrent writers would silently corrupt the registry. Use AWS S3 or a server that supports conditional PutObject (moto, RustFS, MinIO)."
    )]
    NoConditionalWrites {
        /// Endpoint or bucket.
        endpoint: String,
        /// What the probe saw.
        detail: String,
    },
    /// An S3 request failed.
    #[error("S3 {op} on {key} failed: {message}")]
    S3 {
        /// Operation.
        op: &'static str,
        /// Key or bucket.
        key: String,
        /// Service message.
        message: String,
    },
    /// A `dir://` key runs through a symbolic link: refused, since a link can point outside
    /// the store's root.
    #[error(
        "{path} is a symbolic link inside the store; falaj refuses links in a dir:// store because they can point outside it. Replace it with the real file or directory"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A blob upload exceeded a limit or its source failed.
    #[error("blob upload failed: {reason}")]
    Blob {
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// Whether this is a failed precondition.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether the same call may succeed if tried again: a lost compare-and-swap (the retry
    /// reads the new state), a local I/O failure or a failed S3 request (network, throttling,
    /// a 5xx). A bad key or URI, a missing store, a region or prefix refusal, a symlink, a
    /// store without conditional writes or an oversized blob fails the same way every time.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::Io { .. } | Self::S3 { .. }
        )
    }
}

/// An object store with the semantics the registry relies on.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The URI this store was opened with.
    fn uri(&self) -> &str;
    /// Region the data lives in.
    fn region(&self) -> &str;
    /// Reads an object, `None` if absent.
    async fn get(&self, key: &StoreKey) -> Result<Option<Object>, StoreError>;
    /// Reads an object unless its ETag is still `known` (`If-None-Match` on S3: an unchanged
    /// object costs a 304 and no body). The default reads and compares.
    async fn get_if_changed(
        &self,
        key: &StoreKey,
        known: Option<&ETag>,
    ) -> Result<Fetched, StoreError> {
        Ok(match self.get(key).await? {
            None => Fetched::Absent,
            Some(o) if Some(&o.etag) == known => Fetched::Unchanged,
            Some(o) => Fetched::Changed(o),
        })
    }
    /// Writes an object under a precondition; returns the new ETag.
    async fn put(
        &self,
        key: &StoreKey,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<ETag, StoreError>;
    /// Lists keys under `prefix` after `start_after`, at most `limit` of them.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;
    /// The store key of object `key` in `bucket`, as named by an S3 event. An S3 store refuses
    /// another bucket and strips its own prefix; the embedded store stands for any bucket.
    fn key_for_object(&self, bucket: &str, key: &str) -> Result<StoreKey, StoreError> {
        let _ = bucket;
        Ok(StoreKey::new(key)?)
    }
    /// Deletes an expired idempotency claim (a key under `idempotency/`; every other object
    /// is immutable or moved by compare-and-swap, and nothing else is ever deleted). Returns
    /// whether it did: an S3 store leaves expiry to the bucket's lifecycle rule
    /// (`terraform/modules/registry`), so the default deletes nothing.
    async fn expire_claim(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let _ = key;
        Ok(false)
    }
    /// A URL that reads object `key` directly for `expires` (an S3 presigned GET), so a large
    /// download need not pass through the caller (a Lambda function answers 6 MB at most).
    /// `None`: the store has no such URLs (`dir://`).
    async fn presign_get(
        &self,
        key: &StoreKey,
        expires: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        let _ = (key, expires);
        Ok(None)
    }
    /// Streams `src` into `blobs/sha256/<hex>`, hashing while copying, in bounded memory.
    /// Nothing is visible under `blobs/` until the whole blob is in place.
    async fn put_blob(&self, src: BlobSource, progress: Progress) -> Result<BlobInfo, StoreError>;
}

/// Lists every key under `prefix`, following pagination.
pub async fn list_all(store: &dyn Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_page(prefix, after.as_deref(), 1000).await?;
        out.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Regions data may live in.
    pub allowed: AllowedRegions,
    /// Create a `dir://` store that does not exist yet.
    pub create: bool,
    /// S3 endpoint override (S3-compatible servers); else `FALAJ_S3_ENDPOINT`/`AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
}

/// The default store: `dir://.falaj` in the working directory.
pub const DEFAULT_STORE: &str = "dir://.falaj";

/// Opens the store named by `uri` (`dir://PATH`, `s3://BUCKET[/PREFIX]`, or a plain path).
pub async fn open(uri: &str, opts: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::InvalidUri {
                uri: uri.into(),
                reason: "the bucket name is empty".into(),
            });
        }
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| std::env::var("FALAJ_S3_ENDPOINT").ok())
            .filter(|e| !e.is_empty());
        let s = s3::S3Store::connect(
            bucket,
            prefix.trim_end_matches('/'),
            endpoint,
            &opts.allowed,
        )
        .await?;
        return Ok(Arc::new(s));
    }
    let path = match uri.strip_prefix("dir://") {
        Some(p) => p,
        None if uri.contains("://") => {
            return Err(StoreError::InvalidUri {
                uri: uri.into(),
                reason: "unknown scheme".into(),
            });
        }
        None => uri,
    };
    if path.is_empty() {
        return Err(StoreError::InvalidUri {
            uri: uri.into(),
            reason: "the path is empty".into(),
        });
    }
    Ok(Arc::new(dir::DirStore::open(
        PathBuf::from(path),
        opts.create,
        &opts.allowed,
    )?))
}
