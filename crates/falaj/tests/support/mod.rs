//! Test support: a real S3-compatible server on loopback, and small ONNX fixtures.
//!
//! The S3 tests run against `moto_server` (PyPI `moto[server]`), which honours
//! `If-None-Match` and `If-Match` on PutObject. `.ci/run` and `scripts/test.sh` install it and
//! export `FALAJ_TEST_S3_ENDPOINT`; without that variable the first S3 test starts its own.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use prost::Message;

static ENDPOINT: OnceLock<String> = OnceLock::new();
static SERVER: OnceLock<std::sync::Mutex<Option<Child>>> = OnceLock::new();

/// The loopback S3 endpoint, starting `moto_server` if none was given.
pub fn s3_endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            // SAFETY: runs once, before any S3 client reads the environment.
            unsafe {
                for (k, v) in [("AWS_ACCESS_KEY_ID", "falaj-test"), ("AWS_SECRET_ACCESS_KEY", "falaj-test"), ("AWS_REGION", "me-central-1")] {
                    if std::env::var_os(k).is_none() {
                        std::env::set_var(k, v);
                    }
                }
            }
            if let Ok(e) = std::env::var("FALAJ_TEST_S3_ENDPOINT") {
                return e;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start moto_server ({e}); install it with `pip install 'moto[server]'` or run scripts/test.sh"));
            SERVER.get_or_init(|| std::sync::Mutex::new(Some(child)));
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto_server did not listen on port {port} within 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}

/// An S3 client for the test server, signing for `region`.
pub fn s3_client(region: &str) -> aws_sdk_s3::Client {
    let endpoint = s3_endpoint();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "falaj-test",
            "falaj-test",
            None,
            None,
            "test",
        ))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates a fresh bucket in `region` and returns its name.
pub async fn s3_bucket(region: &str) -> String {
    let client = s3_client(region);
    let name = format!("falaj-test-{:016x}", rand::random::<u64>());
    client
        .create_bucket()
        .bucket(&name)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create bucket {name} in {region}: {e:?}"));
    name
}

/// The ARN moto's STS names the static test credentials by.
pub const MOTO_USER_ARN: &str = "arn:aws:sts::123456789012:user/moto";

/// On an `s3://` store the CLI acts as whoever STS says the caller is: maps the test
/// credentials' ARN to `platform`, the store's admin (the first change makes it so).
pub async fn map_test_caller(reg: &falaj::Registry) {
    falaj::promotion::map_principal(reg, "platform", MOTO_USER_ARN, "platform")
        .await
        .unwrap();
}

/// Grants `role` to each of `who` (the first grant makes `platform` the store's admin).
pub async fn grant(reg: &falaj::Registry, who: &[&str], role: falaj_core::promotion::Role) {
    for w in who {
        falaj::promotion::grant(reg, "platform", w, role)
            .await
            .unwrap();
    }
}

/// Lets uploads to `incoming/` register: ingest registers as `falaj-ingest`, which needs a
/// role that may register, like every other registration path.
pub async fn let_uploads_register(reg: &falaj::Registry) {
    grant(
        reg,
        &[falaj::ingest::INGEST_ACTOR],
        falaj_core::promotion::Role::DataScientist,
    )
    .await;
}

/// A tiny valid ONNX model; `seed` changes its weights (and so its digest).
pub fn onnx_bytes(seed: u32) -> Vec<u8> {
    let w: Vec<f32> = (0..6).map(|i| (i as f32 + seed as f32) * 0.1).collect();
    falaj_core::onnx::linear_model(3, 2, &w, &[0.5, seed as f32]).encode_to_vec()
}
