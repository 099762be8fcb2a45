//! Registry benchmarks, each printed beside its baseline from the same run.
//!
//! 1. `falaj push` of a large artifact to `dir://` vs `cp` of the same file and
//!    `openssl dgst -sha256` of it; peak RSS of the push process.
//! 2. register + alias move on `dir://`, p50/p99, vs one bare create-only put.
//! 3. the same against S3 on loopback (moto), if `moto_server` is on PATH or
//!    `FALAJ_TEST_S3_ENDPOINT` names a running server.
//!
//! Run: `cargo bench -p falaj --bench registry` (env: `FALAJ_BENCH_PUSH_MIB`, default 1024;
//! `FALAJ_BENCH_OPS`, default 1000; `FALAJ_BENCH_S3_OPS`, default 200).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use falaj::store::{self, OpenOptions, Precondition, no_progress};
use falaj::{Artifact, Expect, NewModel, Registration, Registry};
use falaj_core::{AllowedRegions, StoreKey};
use prost::Message;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cmd`, returning wall time and the child's peak RSS in KiB.
fn timed(cmd: &mut Command) -> (Duration, i64) {
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and fills a zeroed rusage.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    let _ = child.try_wait();
    (elapsed, usage.ru_maxrss)
}

fn best_of(n: usize, mut f: impl FnMut() -> (Duration, i64)) -> (Duration, i64) {
    (0..n).map(|_| f()).min_by_key(|(d, _)| *d).expect("n > 0")
}

fn push_bench(dir: &Path) {
    let mib = env_u64("FALAJ_BENCH_PUSH_MIB", 1024);
    let file = dir.join("artifact.onnx");
    let f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    falaj_core::onnx::write_padded_model(f, mib << 20).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    let bin = env!("CARGO_BIN_EXE_falaj");
    let _ = Command::new("cat")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status(); // warm the page cache

    let cp = best_of(3, || {
        let dest = dir.join("copy");
        let r = timed(Command::new("cp").arg(&file).arg(&dest));
        std::fs::remove_file(&dest).unwrap();
        r
    });
    let dgst = best_of(3, || {
        timed(
            Command::new("openssl")
                .args(["dgst", "-sha256"])
                .arg(&file)
                .stdout(std::process::Stdio::null()),
        )
    });
    let mut n = 0;
    let push = best_of(3, || {
        // A fresh store each time, so the blob is really written (no dedup).
        n += 1;
        let store = format!("dir://{}", dir.join(format!("store{n}")).display());
        // Registering needs a role: granted before the clock starts.
        let granted = Command::new(bin)
            .args([
                "--store", &store, "--as", "bench", "roles", "grant", "bench",
            ])
            .arg("data-scientist")
            .output()
            .unwrap();
        assert!(granted.status.success(), "{granted:?}");
        let r = timed(
            Command::new(bin)
                .args([
                    "--store", &store, "--json", "--as", "bench", "push", "big", "--create",
                ])
                .arg(&file)
                .stdout(std::process::Stdio::null()),
        );
        std::fs::remove_dir_all(dir.join(format!("store{n}"))).unwrap();
        r
    });
    let gib = size as f64 / (1u64 << 30) as f64;
    println!(
        "\n## push of a {:.2} GiB artifact to dir:// (best of 3)",
        gib
    );
    println!(
        "{:<28} {:>9} {:>10} {:>12}",
        "", "seconds", "GiB/s", "peak RSS"
    );
    for (name, (d, rss)) in [
        ("cp (baseline)", cp),
        ("openssl dgst -sha256", dgst),
        ("falaj push", push),
    ] {
        println!(
            "{:<28} {:>9.3} {:>10.2} {:>9} MiB",
            name,
            d.as_secs_f64(),
            gib / d.as_secs_f64(),
            rss / 1024
        );
    }
    println!(
        "push / cp = {:.2}x (target <= 1.5x); push / openssl = {:.2}x; push peak RSS {} MiB (target <= 64 MiB)",
        push.0.as_secs_f64() / cp.0.as_secs_f64(),
        push.0.as_secs_f64() / dgst.0.as_secs_f64(),
        push.1 / 1024
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn ops_bench(label: &str, uri: &str, endpoint: Option<String>, ops: u64) {
    let opts = OpenOptions {
        allowed: AllowedRegions::default(),
        create: true,
        endpoint,
    };
    let reg = Registry::new(store::open(uri, &opts).await.expect("open store"));
    reg.create_model(
        NewModel {
            name: "bench".into(),
            ..Default::default()
        },
        "bench",
    )
    .await
    .unwrap();
    let mut register = Vec::new();
    let mut alias = Vec::new();
    let mut raw = Vec::new();
    for i in 0..ops {
        let bytes =
            falaj_core::onnx::linear_model(3, 2, &[i as f32; 6], &[0.0, 1.0]).encode_to_vec();
        let t = Instant::now();
        let v = reg
            .register(
                Registration {
                    model: "bench".into(),
                    artifact: Artifact::Bytes(Bytes::from(bytes)),
                    artifact_name: "m.onnx".into(),
                    manifest: None,
                    semver: None,
                    author: "bench".into(),
                    author_principal: None,
                    source: None,
                },
                no_progress(),
            )
            .await
            .unwrap();
        register.push(t.elapsed());
        let t = Instant::now();
        reg.move_alias(
            "bench",
            "champion",
            Some(v.version.version),
            Expect::Any,
            "bench",
        )
        .await
        .unwrap();
        alias.push(t.elapsed());
        let key = StoreKey::new(format!("bench/raw/{i}.json")).unwrap();
        let t = Instant::now();
        reg.store()
            .put(&key, Bytes::from_static(b"{}"), Precondition::IfAbsent)
            .await
            .unwrap();
        raw.push(t.elapsed());
    }
    println!("\n## {label}: {ops} operations");
    println!("{:<36} {:>10} {:>10}", "", "p50 ms", "p99 ms");
    let raw_p50 = {
        raw.sort();
        percentile(&raw, 0.5)
    };
    for (name, v) in [
        ("create-only put (baseline)", &mut raw),
        ("register version", &mut register),
        ("alias move (CAS)", &mut alias),
    ] {
        v.sort();
        println!(
            "{:<36} {:>10.3} {:>10.3}   p50 = {:.1}x baseline",
            name,
            percentile(v, 0.5).as_secs_f64() * 1e3,
            percentile(v, 0.99).as_secs_f64() * 1e3,
            percentile(v, 0.5).as_secs_f64() / raw_p50.as_secs_f64()
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters nothing here.
    let dir = tempfile::tempdir_in(
        std::env::var("FALAJ_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into()),
    )
    .unwrap();
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    push_bench(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let uri = format!("dir://{}", dir.path().join("ops").display());
    rt.block_on(ops_bench(
        "dir://",
        &uri,
        None,
        env_u64("FALAJ_BENCH_OPS", 1000),
    ));
    match s3_endpoint() {
        Some((endpoint, _guard)) => rt.block_on(async {
            let bucket = make_bucket(&endpoint).await;
            ops_bench(
                "s3:// (moto on loopback)",
                &format!("s3://{bucket}"),
                Some(endpoint.clone()),
                env_u64("FALAJ_BENCH_S3_OPS", 200),
            )
            .await
        }),
        None => println!(
            "\n## s3://: skipped (no moto_server on PATH and FALAJ_TEST_S3_ENDPOINT unset)"
        ),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

struct Kill(Option<std::process::Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
        }
    }
}

fn s3_endpoint() -> Option<(String, Arc<Kill>)> {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
    ] {
        if std::env::var_os(k).is_none() {
            // SAFETY: single-threaded at this point of main.
            unsafe { std::env::set_var(k, v) };
        }
    }
    if let Ok(e) = std::env::var("FALAJ_TEST_S3_ENDPOINT") {
        return Some((e, Arc::new(Kill(None))));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let guard = Arc::new(Kill(Some(child)));
    for _ in 0..150 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((format!("http://127.0.0.1:{port}"), guard));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

async fn make_bucket(endpoint: &str) -> String {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("me-central-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    let name = format!("falaj-bench-{:08x}", rand::random::<u32>());
    aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(&name)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from("me-central-1"))
                .build(),
        )
        .send()
        .await
        .expect("create bench bucket");
    name
}
