//! falaj-edge end to end: the real binary, the real inference component (built by
//! `scripts/wasm-component.sh`), a `dir://` store with registered versions and signed
//! deployment manifests, and plain HTTP/1.1 over loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use falaj::deploy::DeployKey;
use falaj::store::{Precondition, Store};
use falaj::{Artifact, NewModel, Registration, Registry};
use falaj_core::StoreKey;
use falaj_core::deployment::{DeploymentManifest, SCHEMA, Slot, Strategy};
use falaj_core::sketch::SketchWindow;
use falaj_core::version::ModelVersion;
use serde_json::{Value, json};

mod node_support;
use node_support::*;

const MODEL: &str = "edge-linear";
const INPUTS: usize = 3;
const OUTPUTS: usize = 2;

fn weights(seed: u32) -> (Vec<f32>, Vec<f32>) {
    let w = (0..INPUTS * OUTPUTS)
        .map(|i| (i as f32 + seed as f32) * 0.1)
        .collect();
    (w, vec![0.5, seed as f32])
}

/// `x·W + b`, what version `seed` must answer.
fn expected(seed: u32, x: &[f32]) -> Vec<f32> {
    let (w, b) = weights(seed);
    (0..OUTPUTS)
        .map(|j| b[j] + (0..INPUTS).map(|i| x[i] * w[i * OUTPUTS + j]).sum::<f32>())
        .collect()
}

struct World {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    reg: Registry,
    key: DeployKey,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("dir://{}", dir.path().join("store").display());
        let opts = falaj::store::OpenOptions {
            create: true,
            ..Default::default()
        };
        let store = falaj::store::open(&uri, &opts).await.unwrap();
        let reg = Registry::new(store.clone());
        reg.create_model(
            NewModel {
                name: MODEL.into(),
                owner: "ml-team".into(),
                ..Default::default()
            },
            "dana",
        )
        .await
        .unwrap();
        let key = DeployKey::from_seed([7; 32]);
        falaj::deploy::publish_key(&reg, &key).await.unwrap();
        Self {
            dir,
            store,
            reg,
            key,
        }
    }

    fn uri(&self) -> String {
        format!("dir://{}", self.dir.path().join("store").display())
    }

    fn store_root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    async fn register(&self, seed: u32) -> ModelVersion {
        let (w, b) = weights(seed);
        let bytes =
            prost::Message::encode_to_vec(&falaj_core::onnx::linear_model(INPUTS, OUTPUTS, &w, &b));
        self.register_bytes(MODEL, bytes, None).await
    }

    /// Registers `onnx` (with its training manifest, if any) as a new version of `model`.
    async fn register_bytes(
        &self,
        model: &str,
        onnx: Vec<u8>,
        manifest: Option<Vec<u8>>,
    ) -> ModelVersion {
        self.reg
            .register(
                Registration {
                    model: model.into(),
                    artifact: Artifact::Bytes(Bytes::from(onnx)),
                    artifact_name: "model.onnx".into(),
                    manifest: manifest.map(|m| ("manifest.json".into(), Bytes::from(m))),
                    semver: None,
                    author: "dana".into(),
                    author_principal: None,
                    source: None,
                },
                falaj::store::no_progress(),
            )
            .await
            .unwrap()
            .version
    }

    fn manifest(
        generation: u64,
        champion: &ModelVersion,
        challenger: Option<(&ModelVersion, u8)>,
    ) -> DeploymentManifest {
        DeploymentManifest {
            schema: SCHEMA,
            env: "prod".into(),
            model: MODEL.into(),
            generation,
            strategy: if challenger.is_some() {
                Strategy::Canary
            } else {
                Strategy::Direct
            },
            champion: Slot::new(champion.version, champion.digest.clone()),
            challenger: challenger.map(|(v, _)| Slot::new(v.version, v.digest.clone())),
            challenger_weight: challenger.map_or(0, |(_, w)| w),
            standby: None,
            history: Vec::new(),
            updated_by: "mel".into(),
            updated_at: "2026-11-23T00:00:00Z".into(),
            event_seq: None,
            challenger_mode: Default::default(),
            split_key: None,
        }
    }

    async fn put_deployment(&self, bytes: Vec<u8>) {
        let key = StoreKey::new(format!("deployments/prod/{MODEL}.json")).unwrap();
        self.store
            .put(&key, Bytes::from(bytes), Precondition::None)
            .await
            .unwrap();
    }

    async fn deploy(&self, m: &DeploymentManifest) {
        self.put_deployment(serde_json::to_vec(&self.key.sign(m)).unwrap())
            .await;
    }

    fn node(&self, cache: &str, extra_env: &[(&str, &str)]) -> Edge {
        Edge::start(
            &self.uri(),
            &self.dir.path().join(cache),
            &hex::encode(self.key.public().as_bytes()),
            &["--max-concurrent", "4", "--fault-drills"],
            extra_env,
        )
    }
}

impl Edge {
    fn predict(&self, x: &[f32], key: Option<&str>) -> Reply {
        let body = serde_json::to_vec(&json!({ "inputs": [x] })).unwrap();
        let mut headers = vec![("content-type", "application/json")];
        if let Some(k) = key {
            headers.push(("x-falaj-request-key", k));
        }
        self.request(
            "POST",
            &format!("/v1/models/{MODEL}/predict"),
            &headers,
            &body,
        )
    }

    /// Waits until the node serves `generation` of the model (or reports `error_contains`).
    fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let models = self.get("/v1/models").json();
            let status = models["models"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["model"] == MODEL)
                .cloned()
                .unwrap_or(Value::Null);
            if f(&status) {
                return status;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; last status {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_generation(&self, generation: u64) -> Value {
        self.wait_for(&format!("generation {generation}"), |s| {
            s["generation"] == generation
        })
    }
}

fn outputs(r: &Reply) -> Vec<f32> {
    let v = r.json();
    v["predictions"][0]["output"]
        .as_array()
        .unwrap_or_else(|| panic!("no output in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_deployment_is_verified_served_swapped_and_sketched() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let v2 = w.register(2).await;
    let edge = w.node("cache", &[]);
    assert_eq!(edge.start["env"], "prod", "production is spelled prod");

    w.deploy(&World::manifest(1, &v1, None)).await;
    edge.wait_generation(1);
    let x = [1.0f32, -2.0, 0.5];
    for _ in 0..5 {
        let r = edge.predict(&x, None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-falaj-model-version"), Some("1"));
        assert_eq!(r.header("x-falaj-slot"), Some("champion"));
        assert_close(&outputs(&r), &expected(1, &x));
        // Where the time went: the component's inference and the node's whole call.
        let timing = r.header("server-timing").unwrap_or_default();
        let dur = |name: &str| -> f64 {
            timing
                .split(',')
                .map(str::trim)
                .find_map(|e| e.strip_prefix(&format!("{name};dur=")))
                .unwrap_or_else(|| panic!("no {name} in server-timing {timing:?}"))
                .parse()
                .unwrap()
        };
        assert!(dur("edge") >= dur("infer"), "{timing}");
        assert_eq!(r.header("x-falaj-request-id").map(str::len), Some(32));
    }
    // Loaded once: one instance served the warm-up and every request since.
    let meta = edge.get(&format!("/v1/models/{MODEL}/metadata")).json();
    assert_eq!(meta["instance"]["loads"], 1, "{meta}");
    assert_eq!(meta["digest"], v1.digest.as_str());
    assert_eq!(meta["runtime"]["simd128"], true);

    // A new generation swaps the version; the answers change with it.
    w.deploy(&World::manifest(2, &v2, None)).await;
    let status = edge.wait_generation(2);
    assert_eq!(status["champion"], 2);
    let r = edge.predict(&x, None);
    assert_eq!(r.header("x-falaj-model-version"), Some("2"));
    assert_eq!(r.header("x-falaj-generation"), Some("2"));
    assert_close(&outputs(&r), &expected(2, &x));

    // An older generation (a replay of generation 1, validly signed) is refused.
    w.deploy(&World::manifest(1, &v1, None)).await;
    let status = edge.wait_for("the replay refusal", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("older"))
    });
    assert_eq!(status["generation"], 2);
    assert_eq!(
        edge.predict(&x, None).header("x-falaj-model-version"),
        Some("2")
    );

    // Metrics per model and version: five predictions and the metadata call on version 1.
    let metrics = String::from_utf8(edge.get("/metrics").body).unwrap();
    assert!(
        metrics.contains(&format!(
            "falaj_edge_requests_total{{model=\"{MODEL}\",version=\"1\",code=\"200\"}} 6"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "falaj_edge_request_duration_seconds_count{{model=\"{MODEL}\",version=\"2\"}} 2"
    )));
    assert!(metrics.contains(&format!(
        "falaj_edge_deployment_generation{{model=\"{MODEL}\"}} 2"
    )));

    // Sketches of the inputs reach telemetry/prod/<node>/<model>/ within a window or two.
    let prefix = format!("telemetry/prod/edge-test-1/{MODEL}/");
    let t0 = Instant::now();
    let windows: Vec<SketchWindow> = loop {
        let keys = falaj::store::list_all(w.store.as_ref(), &prefix)
            .await
            .unwrap();
        let mut windows = Vec::new();
        // The canary's live windows share the folder; the sketches are the rest.
        for k in keys.iter().filter(|k| !k.ends_with(".live.json")) {
            let o = w
                .store
                .get(&StoreKey::new(k.clone()).unwrap())
                .await
                .unwrap()
                .unwrap();
            windows.push(serde_json::from_slice::<SketchWindow>(&o.bytes).unwrap());
        }
        let rows: u64 = windows.iter().map(|w| w.rows).sum();
        if rows >= 7 {
            break windows;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "sketches: {rows} rows in {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v1_rows: u64 = windows
        .iter()
        .filter(|w| w.version == 1)
        .map(|w| w.rows)
        .sum();
    assert_eq!(v1_rows, 5, "five predictions went to version 1");
    let s = windows.iter().find(|w| w.version == 1).unwrap();
    assert_eq!(s.features.len(), INPUTS);
    assert_eq!(s.features[1].min, -2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_split_follows_the_weight_and_sticks_to_the_request_key() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let v2 = w.register(2).await;
    let edge = w.node("cache", &[]);
    w.deploy(&World::manifest(1, &v1, Some((&v2, 30)))).await;
    let status = edge.wait_generation(1);
    assert_eq!(status["challenger"], json!([2, 30]));
    let x = [0.5f32, 0.5, 0.5];
    let mut on_challenger = 0;
    for i in 0..200 {
        let key = format!("user-{i}");
        let r = edge.predict(&x, Some(&key));
        assert_eq!(r.status, 200);
        let version = r.header("x-falaj-model-version").unwrap().to_string();
        let want = if version == "2" { 2 } else { 1 };
        assert_close(&outputs(&r), &expected(want, &x));
        if version == "2" {
            on_challenger += 1;
            assert_eq!(r.header("x-falaj-slot"), Some("challenger"));
        }
        if i % 20 == 0 {
            let again = edge.predict(&x, Some(&key));
            assert_eq!(
                again.header("x-falaj-model-version"),
                Some(version.as_str()),
                "a request key sticks to one side"
            );
        }
    }
    assert!(
        (30..=90).contains(&on_challenger),
        "30% weight sent {on_challenger} of 200 to the challenger"
    );

    // Weight 100 is promotion: everything on the new champion.
    w.deploy(&World::manifest(2, &v2, None)).await;
    edge.wait_generation(2);
    for i in 0..10 {
        let r = edge.predict(&x, Some(&format!("user-{i}")));
        assert_eq!(r.header("x-falaj-model-version"), Some("2"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_wrong_digests_are_refused_and_the_last_good_keeps_serving() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let v2 = w.register(2).await;
    let v3 = w.register(3).await;
    // A hand-made object no falaj key can name, listed first: skipped, never stopping the pass.
    let dir = w.store_root().join("deployments/prod");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0\\bad.json"), b"{}").unwrap();
    let edge = w.node("cache", &[]);
    w.deploy(&World::manifest(1, &v1, None)).await;
    edge.wait_generation(1);
    let x = [1.0f32, 2.0, 3.0];

    // Signed by a key the node does not trust.
    let rogue = DeployKey::from_seed([9; 32]);
    let signed = rogue.sign(&World::manifest(2, &v2, None));
    w.put_deployment(serde_json::to_vec(&signed).unwrap()).await;
    edge.wait_for("the rogue-key refusal", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("signed by key"))
    });

    // The trusted key, but the payload edited after signing.
    let mut tampered = w.key.sign(&World::manifest(3, &v2, None));
    tampered.payload = tampered
        .payload
        .replace("\"generation\":3", "\"generation\":4");
    w.put_deployment(serde_json::to_vec(&tampered).unwrap())
        .await;
    edge.wait_for("the bad-signature refusal", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not verify"))
    });

    // Validly signed, but the digest is not the version's.
    let mut m = World::manifest(5, &v2, None);
    m.champion.digest = v3.digest.clone();
    w.deploy(&m).await;
    edge.wait_for("the digest refusal", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("version record") && e.contains(&v3.digest))
    });

    // Validly signed, record matches, but the blob in the store was altered.
    let hex = v3.digest.strip_prefix("sha256:").unwrap();
    let blob = w.store_root().join("blobs/sha256").join(hex);
    assert!(
        blob.exists(),
        "the dir store keeps blobs at {}",
        blob.display()
    );
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();
    w.deploy(&World::manifest(6, &v3, None)).await;
    let status = edge.wait_for("the artifact refusal", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("the artifact has digest"))
    });
    assert_eq!(status["generation"], 1, "{status}");
    assert!(status["refusals"].as_u64().unwrap() >= 4, "{status}");

    let r = edge.predict(&x, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-falaj-model-version"), Some("1"));
    assert_close(&outputs(&r), &expected(1, &x));
    let metrics = String::from_utf8(edge.get("/metrics").body).unwrap();
    assert!(metrics.contains(&format!(
        "falaj_edge_deployment_refusals_total{{model=\"{MODEL}\"}} 4"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let edge = w.node("cache", &[]);
    w.deploy(&World::manifest(1, &v1, None)).await;
    edge.wait_generation(1);
    let path = format!("/v1/models/{MODEL}/predict");
    let json_ct = [("content-type", "application/json")];

    let check = |r: Reply, status: u16, code: &str| {
        let v = r.json();
        assert_eq!(r.status, status, "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    };
    check(
        edge.request("POST", &path, &json_ct, b"{\"inputs\": [[1, 2"),
        400,
        "malformed_json",
    );
    let r = edge.request("POST", &path, &json_ct, br#"{"inputs": [[1, 2]]}"#);
    let v = r.json();
    assert_eq!(r.status, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains('3'),
        "names the expected width: {v}"
    );
    let nan: Vec<u8> = [1.0f32, f32::NAN, 0.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let r = edge.request(
        "POST",
        &path,
        &[("content-type", "application/octet-stream")],
        &nan,
    );
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let big = vec![b' '; (4 << 20) + 10];
    check(
        edge.request("POST", &path, &json_ct, &big),
        413,
        "body_too_large",
    );
    check(edge.get("/v1/models/nope/predict"), 404, "unknown_model");
    check(edge.get(&path), 405, "method_not_allowed");
    check(edge.get("/elsewhere"), 404, "not_found");
    // Still serving.
    assert_eq!(edge.predict(&[1.0, 2.0, 3.0], None).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_a_loop_and_a_balloon_fail_only_their_own_request() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let edge = Arc::new(w.node("cache", &[]));
    w.deploy(&World::manifest(1, &v1, None)).await;
    edge.wait_generation(1);
    let x = [1.0f32, 1.0, 1.0];
    let fault = |kind: &str| {
        edge.request(
            "POST",
            &format!("/v1/models/{MODEL}/__fault/{kind}"),
            &[],
            b"",
        )
    };

    let r = fault("trap");
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "model_crashed");
    assert_close(&outputs(&edge.predict(&x, None)), &expected(1, &x));

    let r = fault("balloon");
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "model_crashed");
    assert_close(&outputs(&edge.predict(&x, None)), &expected(1, &x));

    // A loop runs into the deadline while other requests keep being answered.
    let looping = {
        let edge = edge.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = edge.request(
                "POST",
                &format!("/v1/models/{MODEL}/__fault/loop"),
                &[],
                b"",
            );
            (r.status, r.json(), t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let r = edge.predict(&x, None);
        assert_eq!(r.status, 200, "served while another request loops");
    }
    let (status, body, took) = looping.join().unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "deadline_exceeded");
    assert!(
        took < Duration::from_secs(10),
        "the 1.5 s deadline stopped it after {took:?}"
    );
    assert_eq!(edge.predict(&x, None).status, 200);
    let metrics = String::from_utf8(edge.get("/metrics").body).unwrap();
    assert!(
        metrics.contains(&format!(
            "falaj_edge_request_errors_total{{model=\"{MODEL}\",version=\"1\"}} 3"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_swap_comes_back_on_the_last_good_version() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let v2 = w.register(2).await;
    let x = [2.0f32, 0.0, -1.0];
    {
        let edge = w.node("cache", &[]);
        w.deploy(&World::manifest(1, &v1, None)).await;
        edge.wait_generation(1);
    }
    // Generation 2 arrives; the node dies after staging it, before committing the swap.
    w.deploy(&World::manifest(2, &v2, None)).await;
    let mut crashing = w.node("cache", &[("FALAJ_EDGE_FAIL_POINT", "before-commit")]);
    assert_eq!(crashing.start["restored"], 1);
    assert_eq!(
        crashing.start["component_from_cache"], true,
        "compiled once, cached by digest"
    );
    let t0 = Instant::now();
    let exit = loop {
        if let Some(status) = crashing.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the fail point never fired"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "aborted mid-swap: {exit:?}");

    // Meanwhile the store's manifest gets corrupted; the restarted node serves generation 1.
    let mut bad = w.key.sign(&World::manifest(3, &v2, None));
    bad.signature = format!("ed25519:{}", "00".repeat(64));
    w.put_deployment(serde_json::to_vec(&bad).unwrap()).await;
    let edge = w.node("cache", &[]);
    assert_eq!(edge.start["restored"], 1);
    let r = edge.predict(&x, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-falaj-model-version"), Some("1"));
    assert_close(&outputs(&r), &expected(1, &x));
    let status = edge.wait_for("the refusal of the corrupted manifest", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not verify"))
    });
    assert_eq!(status["generation"], 1);
}

/// Attack: a node that took its key from the store runs whatever a store writer self-signed.
/// Without a pinned key the node refuses to start, naming both ways to pin one.
#[test]
fn a_node_without_a_pinned_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_falaj-edge"))
        .args(["--store", &format!("dir://{}", dir.path().display())])
        .env_remove("FALAJ_TRUST_KEY")
        .env_remove("FALAJ_TRUST_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--trust-key HEX") && err.contains("--trust-key-file"),
        "{err}"
    );
}

/// Every bring-your-own model case on a real node (tests/fixtures/models: the PyTorch MLP,
/// the scikit-learn forest, the torchvision exports): registered with the manifest `falaj
/// manifest init` wrote, its signed deployment pulled, its rows answered with onnxruntime's
/// outputs (within 1e-4 relative); and the squeezenet case's PNG body with onnxruntime's
/// outputs for the tensor its image rule makes (scripts/make-byo-cases.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bring_your_own_model_cases_are_pulled_signed_and_answer_as_onnxruntime() {
    let w = World::new().await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models");
    let names = [
        "pytorch-mlp",
        "sklearn-forest",
        "torchvision-squeezenet",
        "torchvision-mobilenet-v3-small",
        "torchvision-shufflenet-v2",
    ];
    for name in names {
        let read = |f: &str| std::fs::read(models.join(name).join(f)).unwrap();
        w.reg
            .create_model(
                NewModel {
                    name: name.into(),
                    ..Default::default()
                },
                "dana",
            )
            .await
            .unwrap();
        let v = w
            .register_bytes(name, read("model.onnx"), Some(read("manifest.json")))
            .await;
        let mut m = World::manifest(1, &v, None);
        m.model = name.into();
        w.store
            .put(
                &StoreKey::new(format!("deployments/prod/{name}.json")).unwrap(),
                Bytes::from(serde_json::to_vec(&w.key.sign(&m)).unwrap()),
                Precondition::None,
            )
            .await
            .unwrap();
    }
    let edge = w.node("cache", &[]);
    let floats = |v: &Value| -> Vec<Vec<f32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    let close = |name: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{name}: edge {g}, onnxruntime {w}"
            );
        }
    };
    for name in names {
        let read = |f: &str| std::fs::read(models.join(name).join(f)).unwrap();
        let rows = floats(&serde_json::from_slice::<Value>(&read("inputs.json")).unwrap()["rows"]);
        let want =
            floats(&serde_json::from_slice::<Value>(&read("expected.json")).unwrap()["outputs"]);
        let body = serde_json::to_vec(&json!({ "inputs": rows })).unwrap();
        let post = |ct: &str, body: &[u8]| {
            let t0 = Instant::now();
            loop {
                let r = edge.request(
                    "POST",
                    &format!("/v1/models/{name}/predict"),
                    &[("content-type", ct)],
                    body,
                );
                if r.status == 200 || t0.elapsed() > Duration::from_secs(60) {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let answer = |r: &Reply| -> Vec<Vec<f32>> {
            assert_eq!(
                r.status,
                200,
                "{name}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.header("x-falaj-model-version"), Some("1"), "{name}");
            r.json()["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| match p.get("probabilities") {
                    Some(v) => v
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect(),
                    None => vec![p["value"].as_f64().unwrap() as f32],
                })
                .collect()
        };
        let got = answer(&post("application/json", &body));
        assert_eq!(got.len(), want.len(), "{name}: rows");
        for (g, w) in got.iter().zip(&want) {
            close(name, g, w);
        }
        if name == "torchvision-squeezenet" {
            let want = floats(
                &serde_json::from_slice::<Value>(&read("image-expected.json")).unwrap()["outputs"],
            );
            let got = answer(&post("image/png", &read("image.png")));
            close("torchvision-squeezenet (PNG)", &got[0], &want[0]);
        }
    }
}

/// Micro-batching: concurrent predictions to one version go as one component call and are
/// split back. Every request gets the answer it gets alone (checked against `x·W + b`), its
/// own request id and its own row count; a body the host cannot parse, and a row whose output
/// overflows (its batch then fails, and each request in it is answered alone), get their own
/// errors while the others succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_predictions_are_batched_and_each_gets_its_own_answer() {
    let w = World::new().await;
    let v1 = w.register(1).await;
    let edge = Arc::new(w.node("cache", &[]));
    w.deploy(&World::manifest(1, &v1, None)).await;
    edge.wait_generation(1);
    let path = format!("/v1/models/{MODEL}/predict");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (edge, path) = (edge.clone(), path.clone());
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let rows: Vec<Vec<f32>> = (0..1 + (t + i) % 3)
                            .map(|r| vec![t as f32, i as f32 * 0.25, r as f32 - 1.0])
                            .collect();
                        let body = match (t, i % 10) {
                            (0, 3) => br#"{"inputs": [[1, 2]]}"#.to_vec(),
                            (1, 7) => br#"{"inputs": [[3e38, 3e38, 3e38]]}"#.to_vec(),
                            _ => serde_json::to_vec(&json!({ "inputs": rows })).unwrap(),
                        };
                        let r = edge.request(
                            "POST",
                            &path,
                            &[("content-type", "application/json")],
                            &body,
                        );
                        (t, i, rows, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut in_batches = 0;
    for h in threads {
        for (t, i, rows, r) in h.join().unwrap() {
            assert!(ids.insert(r.header("x-falaj-request-id").unwrap().to_string()));
            match (t, i % 10) {
                (0, 3) => assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body)),
                (1, 7) => {
                    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
                    assert_eq!(r.json()["code"], "non_finite_output");
                }
                _ => {
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let v = r.json();
                    assert_eq!(v["rows"], rows.len(), "{v}");
                    let preds = v["predictions"].as_array().unwrap();
                    assert_eq!(preds.len(), rows.len(), "{v}");
                    for (p, x) in preds.iter().zip(&rows) {
                        let got: Vec<f32> = p["output"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|o| o.as_f64().unwrap() as f32)
                            .collect();
                        assert_close(&got, &expected(1, x));
                    }
                    if r.header("x-falaj-batch").is_some() {
                        in_batches += 1;
                    }
                }
            }
        }
    }
    assert!(in_batches > 0, "no request was answered from a batch");
    let metrics = String::from_utf8(edge.get("/metrics").body).unwrap();
    let batched: u64 = metrics
        .lines()
        .find(|l| l.starts_with("falaj_edge_batched_requests_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(batched, in_batches, "{metrics}");
    // Alone, the same body gets the same answer (an idle version never waits for a batch).
    let r = edge.predict(&[2.0, 1.0, 0.0], None);
    assert!(r.header("x-falaj-batch").is_none());
    assert_close(&outputs(&r), &expected(1, &[2.0, 1.0, 0.0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runtime_slot_runs_in_the_host_and_a_plain_slot_in_the_sandbox() {
    use falaj_core::deployment::Runtime;
    let w = World::new().await;
    let v1 = w.register(1).await;
    let v2 = w.register(2).await;
    let nn = component_nn();
    let edge = Edge::start(
        &w.uri(),
        &w.dir.path().join("cache-nn"),
        &hex::encode(w.key.public().as_bytes()),
        &["--component", nn.to_str().unwrap(), "--host-threads", "2"],
        &[],
    );
    // The champion is signed for the host, the 50% challenger is not.
    let mut m = World::manifest(1, &v1, Some((&v2, 50)));
    m.champion.runtime = Runtime::Host;
    w.deploy(&m).await;
    edge.wait_generation(1);
    let x = [1.0f32, -2.0, 0.5];
    let mut seen = (0, 0);
    for i in 0..40 {
        let r = edge.predict(&x, Some(&format!("user-{i}")));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        match r.header("x-falaj-slot") {
            Some("champion") => {
                assert_eq!(r.header("x-falaj-runtime"), Some("host"));
                assert_close(&outputs(&r), &expected(1, &x));
                seen.0 += 1;
            }
            _ => {
                assert_eq!(r.header("x-falaj-runtime"), Some("sandbox"));
                assert_close(&outputs(&r), &expected(2, &x));
                seen.1 += 1;
            }
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "both slots answered: {seen:?}");
    let status = edge.wait_generation(1);
    assert_eq!(status["runtime"]["champion"], "host", "{status}");
    assert_eq!(status["runtime"]["challenger"], "sandbox", "{status}");
    // The node counts the host's runs: every champion answer, plus each instance's check
    // run of one row at load.
    let metrics = String::from_utf8(edge.get("/metrics").body).unwrap();
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(counter("falaj_edge_host_runs_total ") > seen.0, "{metrics}");
    assert_eq!(counter("falaj_edge_host_busy_total "), 0);
    // A run of a few microseconds goes inline once the pool has measured one.
    assert!(
        counter("falaj_edge_host_inline_runs_total ") > 0,
        "{metrics}"
    );

    // The next generation signs the champion without the flag: back in the sandbox.
    let m = World::manifest(2, &v1, None);
    w.deploy(&m).await;
    edge.wait_generation(2);
    let r = edge.predict(&x, None);
    assert_eq!(r.header("x-falaj-runtime"), Some("sandbox"));
    assert_close(&outputs(&r), &expected(1, &x));
    let meta = edge.get(&format!("/v1/models/{MODEL}/metadata")).json();
    assert_eq!(meta["runtime"]["where"], "sandbox", "{meta}");
}
