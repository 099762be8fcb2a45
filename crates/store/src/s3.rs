//! `s3://bucket/prefix`: the registry on Amazon S3 or an S3-compatible server.
//!
//! Conditional writes map one to one: create-only is `If-None-Match: *`, compare-and-swap
//! is `If-Match: <etag>`; a 412 (or S3's 409 `ConditionalRequestConflict`) is a conflict.
//! [`S3Store::connect`] refuses a bucket outside the allowed regions and a server that
//! ignores those headers, before anything is written to the registry.
//!
//! Blobs are streamed as a multipart upload to `tmp/uploads/<random>` while hashing (an
//! unfinished multipart upload is invisible), then copied server-side to
//! `blobs/sha256/<hex>` unless an identical blob is already there.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use falaj_core::{AllowedRegions, StoreKey};
use sha2::{Digest, Sha256};
use std::io::Read;

use super::{
    BlobInfo, BlobSource, CHUNK, ETag, Fetched, ListPage, Object, Precondition, Progress, Store,
    StoreError,
};

/// Largest object a single server-side copy accepts.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// A store in an S3 bucket, under an optional prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    uri: String,
    region: String,
    endpoint: String,
    /// `FALAJ_AUDIT_RETENTION_DAYS`: audit events are written under Object Lock in
    /// compliance mode for this many days (the registry bucket policy in Terraform refuses
    /// audit writes without it).
    audit_lock_days: Option<u32>,
}

/// Reads `FALAJ_AUDIT_RETENTION_DAYS` (unset or empty: no Object Lock headers).
fn audit_lock_days() -> Result<Option<u32>, StoreError> {
    match std::env::var("FALAJ_AUDIT_RETENTION_DAYS") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|d| *d > 0)
            .map(Some)
            .ok_or_else(|| StoreError::InvalidUri {
                uri: format!("FALAJ_AUDIT_RETENTION_DAYS={v}"),
                reason: "expected a whole number of days above 0".into(),
            }),
        _ => Ok(None),
    }
}

fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::status)
}

/// The HTTP status of a raw response (a trait so tests of this module need no HTTP types).
trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn message<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or(&err.to_string())
            )
        }
        other => {
            // Walk the source chain: the top level says only "dispatch failure".
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    }
}

impl S3Store {
    /// Connects to `bucket`, checks its region against `allowed`, and probes that the server
    /// honours conditional writes.
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        endpoint: Option<String>,
        allowed: &AllowedRegions,
    ) -> Result<Self, StoreError> {
        let home = allowed
            .regions()
            .first()
            .cloned()
            .unwrap_or_else(|| "me-central-1".into());
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(aws_config::Region::new(home));
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(ep) = &endpoint {
            conf = conf.endpoint_url(ep).force_path_style(true);
        }
        let client = Client::from_conf(conf.build());
        let endpoint_name = endpoint.clone().unwrap_or_else(|| "AWS S3".into());
        let loc = client.get_bucket_location().bucket(bucket).send().await.map_err(|e| {
            let status = status_of(&e);
            let msg = message(&e);
            if status == Some(404) || msg.contains("NoSuchBucket") {
                StoreError::Missing {
                    uri: format!("s3://{bucket}"),
                    hint: format!("bucket {bucket} does not exist at {endpoint_name}; create it in an allowed region first"),
                }
            } else {
                StoreError::S3 { op: "GetBucketLocation", key: bucket.into(), message: msg }
            }
        })?;
        // An empty location constraint is S3's way of saying us-east-1.
        let bucket_region = loc
            .location_constraint()
            .map(|c| c.as_str().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        allowed.check(&format!("bucket {bucket}"), &bucket_region)?;
        let uri = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let store = Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            uri,
            region: bucket_region,
            endpoint: endpoint_name,
            audit_lock_days: audit_lock_days()?,
        };
        store.probe_conditional_writes().await?;
        Ok(store)
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn strip<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .map_or(full, |s| s.trim_start_matches('/'))
        }
    }

    /// Writes a probe object three ways and checks the server refuses what it must.
    async fn probe_conditional_writes(&self) -> Result<(), StoreError> {
        let key = falaj_core::layout::probe(&format!("{:032x}", rand::random::<u128>()));
        let fail = |detail: &str| StoreError::NoConditionalWrites {
            endpoint: self.endpoint.clone(),
            detail: detail.into(),
        };
        let etag = self
            .put(&key, Bytes::from_static(b"1"), Precondition::IfAbsent)
            .await?;
        let second = self
            .put(&key, Bytes::from_static(b"2"), Precondition::IfAbsent)
            .await;
        let wrong = self
            .put(
                &key,
                Bytes::from_static(b"3"),
                Precondition::IfMatch(ETag("\"0000\"".into())),
            )
            .await;
        let right = self
            .put(&key, Bytes::from_static(b"4"), Precondition::IfMatch(etag))
            .await;
        let _ = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await;
        match (second, wrong, right) {
            (Ok(_), _, _) => Err(fail(
                "a second create-only put (If-None-Match: *) of the same key succeeded",
            )),
            (_, Ok(_), _) => Err(fail("a put with a wrong If-Match etag succeeded")),
            (_, _, Err(e)) if e.is_conflict() => {
                Err(fail("a put with the current If-Match etag was refused"))
            }
            (Err(e), _, _) if !e.is_conflict() => Err(e),
            (_, Err(e), _) if !e.is_conflict() => Err(e),
            (_, _, Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    async fn put_bytes(&self, full: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| StoreError::S3 {
                op: "PutObject",
                key: full.into(),
                message: message(&e),
            })?;
        Ok(())
    }

    /// Multipart upload of the chunks from `rx`, starting with `first`.
    async fn multipart(
        &self,
        full: &str,
        first: Vec<u8>,
        rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let s3 = |op: &'static str| {
            move |m: String| StoreError::S3 {
                op,
                key: full.to_string(),
                message: m,
            }
        };
        let up = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| s3("CreateMultipartUpload")(message(&e)))?;
        let upload_id = up.upload_id().unwrap_or_default().to_string();
        let result: Result<Vec<CompletedPart>, StoreError> = async {
            let mut parts = Vec::new();
            let mut next = Some(first);
            let mut n = 1;
            while let Some(chunk) = next {
                let r = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| s3("UploadPart")(message(&e)))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(r.e_tag().map(String::from))
                        .build(),
                );
                n += 1;
                next = rx.recv().await;
            }
            Ok(parts)
        }
        .await;
        let parts = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(e);
            }
        };
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3("CompleteMultipartUpload")(message(&e)))?;
        Ok(())
    }

    async fn exists(&self, full: &str) -> Result<bool, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(StoreError::S3 {
                op: "HeadObject",
                key: full.into(),
                message: message(&e),
            }),
        }
    }

    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<(), StoreError> {
        if size > MAX_SINGLE_COPY {
            return Err(StoreError::Blob {
                reason: format!(
                    "blobs over 5 GiB are not supported yet on S3 (this one is {size} bytes)"
                ),
            });
        }
        let source = format!("{}/{}", self.bucket, encode_copy_source(from));
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source)
            .send()
            .await
            .map_err(|e| StoreError::S3 {
                op: "CopyObject",
                key: to.into(),
                message: message(&e),
            })?;
        Ok(())
    }
}

/// Percent-encodes a key for the `x-amz-copy-source` header, keeping `/`.
fn encode_copy_source(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait::async_trait]
impl Store for S3Store {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn key_for_object(&self, bucket: &str, key: &str) -> Result<StoreKey, StoreError> {
        if bucket != self.bucket {
            return Err(StoreError::InvalidUri {
                uri: format!("s3://{bucket}/{key}"),
                reason: format!(
                    "the object is in bucket {bucket}, but this store is {}",
                    self.uri
                ),
            });
        }
        let rel = if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&format!("{}/", self.prefix))
                .ok_or_else(|| StoreError::OutsidePrefix {
                    uri: format!("s3://{bucket}/{key}"),
                    prefix: self.prefix.clone(),
                })?
        };
        Ok(StoreKey::new(rel)?)
    }

    async fn presign_get(
        &self,
        key: &StoreKey,
        expires: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        let full = self.full(key.as_str());
        let err = |message: String| StoreError::S3 {
            op: "PresignGetObject",
            key: full.clone(),
            message,
        };
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| err(e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .presigned(config)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Some(req.uri().to_string()))
    }

    async fn get(&self, key: &StoreKey) -> Result<Option<Object>, StoreError> {
        Ok(match self.get_if_changed(key, None).await? {
            Fetched::Changed(o) => Some(o),
            Fetched::Absent | Fetched::Unchanged => None,
        })
    }

    async fn get_if_changed(
        &self,
        key: &StoreKey,
        known: Option<&ETag>,
    ) -> Result<Fetched, StoreError> {
        let full = self.full(key.as_str());
        let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
        if let Some(etag) = known {
            req = req.if_none_match(etag.0.clone());
        }
        match req.send().await {
            Ok(resp) => {
                let etag = ETag(resp.e_tag().unwrap_or_default().to_string());
                let body = resp.body.collect().await.map_err(|e| StoreError::S3 {
                    op: "GetObject",
                    key: full.clone(),
                    message: e.to_string(),
                })?;
                Ok(Fetched::Changed(Object {
                    bytes: body.into_bytes(),
                    etag,
                }))
            }
            Err(e) if status_of(&e) == Some(304) => Ok(Fetched::Unchanged),
            Err(e) if status_of(&e) == Some(404) => Ok(Fetched::Absent),
            Err(e) => Err(StoreError::S3 {
                op: "GetObject",
                key: full,
                message: message(&e),
            }),
        }
    }

    async fn put(
        &self,
        key: &StoreKey,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<ETag, StoreError> {
        let full = self.full(key.as_str());
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(bytes));
        req = match &pre {
            Precondition::None => req,
            Precondition::IfAbsent => req.if_none_match("*"),
            Precondition::IfMatch(e) => req.if_match(e.0.clone()),
        };
        if let Some(days) = self
            .audit_lock_days
            .filter(|_| key.as_str().starts_with("audit/"))
        {
            let until = std::time::SystemTime::now()
                + std::time::Duration::from_secs(u64::from(days) * 86_400);
            req = req
                .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from(until))
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256);
        }
        match req.send().await {
            Ok(r) => Ok(ETag(r.e_tag().unwrap_or_default().to_string())),
            Err(e) if matches!(status_of(&e), Some(412) | Some(409)) => {
                let current = self.get(key).await?.map(|o| o.etag);
                Err(StoreError::Conflict {
                    key: key.to_string(),
                    current,
                })
            }
            Err(e) => Err(StoreError::S3 {
                op: "PutObject",
                key: full,
                message: message(&e),
            }),
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let full_prefix = self.full(prefix);
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .max_keys(limit.clamp(1, 1000) as i32);
        if let Some(a) = start_after {
            req = req.start_after(self.full(a));
        }
        let resp = req.send().await.map_err(|e| StoreError::S3 {
            op: "ListObjectsV2",
            key: full_prefix.clone(),
            message: message(&e),
        })?;
        let keys: Vec<String> = resp
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .map(|k| self.strip(k).to_string())
            .collect();
        let next = if resp.is_truncated() == Some(true) {
            keys.last().cloned()
        } else {
            None
        };
        Ok(ListPage { keys, next })
    }

    async fn put_blob(&self, src: BlobSource, progress: Progress) -> Result<BlobInfo, StoreError> {
        // A blocking thread reads and hashes; this task uploads. The channel holds two
        // chunks, so memory stays bounded whatever the blob's size.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let reader = tokio::task::spawn_blocking(move || -> Result<(String, u64), StoreError> {
            let mut r: Box<dyn Read + Send> = match src {
                BlobSource::File(p) => {
                    Box::new(std::fs::File::open(&p).map_err(|source| StoreError::Io {
                        what: "cannot open",
                        path: p.clone(),
                        source,
                    })?)
                }
                BlobSource::Reader(r) => r,
            };
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                let buf = super::read_chunk(&mut *r)?;
                let filled = buf.len();
                if filled == 0 && size > 0 {
                    break;
                }
                hasher.update(&buf);
                size += filled as u64;
                progress(size);
                let last = filled < CHUNK;
                if tx.blocking_send(buf).is_err() || last {
                    break;
                }
            }
            Ok((hex::encode(hasher.finalize()), size))
        });
        let staging = self.full(&format!("tmp/uploads/{:032x}", rand::random::<u128>()));
        let first = rx.recv().await.unwrap_or_default();
        let upload = if first.len() < CHUNK {
            self.put_bytes(&staging, Bytes::from(first)).await
        } else {
            self.multipart(&staging, first, &mut rx).await
        };
        drop(rx);
        let read = reader.await.map_err(|e| StoreError::Blob {
            reason: format!("reader task failed: {e}"),
        })?;
        let (hex, size) = match (read, upload) {
            (Ok(r), Ok(())) => r,
            (Err(e), _) | (_, Err(e)) => {
                let _ = self
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&staging)
                    .send()
                    .await;
                return Err(e);
            }
        };
        let dest = self.full(falaj_core::layout::blob(&hex).as_str());
        let created = !self.exists(&dest).await?;
        if created {
            self.copy(&staging, &dest, size).await?;
        }
        let _ = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&staging)
            .send()
            .await;
        Ok(BlobInfo { hex, size, created })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_source_is_encoded() {
        assert_eq!(super::encode_copy_source("tmp/a b+é"), "tmp/a%20b%2B%C3%A9");
    }
}
