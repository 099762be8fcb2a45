//! The registry test suite, run against both backends: `dir://` in a temp directory and
//! `s3://` on a real S3-compatible server (moto) on loopback.

#[path = "../../falaj/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use falaj::store::{self, OpenOptions, Precondition, Store, StoreError, list_all, no_progress};
use falaj::{Artifact, Expect, NewModel, Registration, Registry, RegistryError, VersionFilter};
use falaj_core::promotion::Role;
use falaj_core::version::ModelRef;
use falaj_core::{AllowedRegions, AuditProblem, StoreKey, layout};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Dir,
    S3,
}

struct Fixture {
    uri: String,
    endpoint: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn new(b: Backend) -> Self {
        match b {
            Backend::Dir => {
                let d = tempfile::tempdir().unwrap();
                let uri = format!("dir://{}", d.path().join("store").display());
                Self {
                    uri,
                    endpoint: None,
                    _dir: Some(d),
                }
            }
            Backend::S3 => {
                let bucket = support::s3_bucket("me-central-1").await;
                let f = Self {
                    uri: format!("s3://{bucket}/reg"),
                    endpoint: Some(support::s3_endpoint()),
                    _dir: None,
                };
                // The CLI is who STS says: the test credentials act as the admin, `platform`,
                // who may act as the identities the tests name with --as.
                support::map_test_caller(&f.registry().await).await;
                f
            }
        }
    }

    async fn store(&self) -> Arc<dyn Store> {
        let opts = OpenOptions {
            allowed: AllowedRegions::default(),
            create: true,
            endpoint: self.endpoint.clone(),
        };
        store::open(&self.uri, &opts).await.unwrap()
    }

    /// A registry with its own caches, as a separate writer would have.
    async fn registry(&self) -> Registry {
        Registry::new(self.store().await)
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_falaj"));
        c.arg("--store").arg(&self.uri).arg("--json");
        if let Some(e) = &self.endpoint {
            c.env("FALAJ_S3_ENDPOINT", e);
        }
        c
    }
}

fn registration(model: &str, bytes: Vec<u8>, author: &str) -> Registration {
    Registration {
        model: model.into(),
        artifact: Artifact::Bytes(Bytes::from(bytes)),
        artifact_name: "model.onnx".into(),
        manifest: None,
        semver: None,
        author: author.into(),
        author_principal: None,
        source: None,
    }
}

async fn new_model(reg: &Registry, name: &str) {
    reg.create_model(
        NewModel {
            name: name.into(),
            owner: "ml-team".into(),
            ..Default::default()
        },
        "ana",
    )
    .await
    .unwrap();
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn dir() {
                super::$name(super::Backend::Dir).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn s3() {
                super::$name(super::Backend::S3).await
            }
        }
    )*};
}

on_both_backends!(
    register_resolve_and_dedup,
    aliases_move_only_by_compare_and_swap,
    tags_and_filters,
    audit_chain_detects_edits,
    invalid_names_and_keys_write_nothing,
    corrupt_json_names_the_key,
    invalid_artifact_leaves_no_trace,
    concurrent_writers_in_threads,
    concurrent_writers_in_processes,
    killed_upload_leaves_no_version_and_no_blob,
    conditional_reads_skip_unchanged_objects,
    a_crash_between_event_and_state_is_rolled_forward,
);

/// `get_if_changed`: what falaj-edge polls deployment manifests with (a 304 on S3).
async fn conditional_reads_skip_unchanged_objects(b: Backend) {
    use falaj::store::Fetched;
    let f = Fixture::new(b).await;
    let store = f.store().await;
    let key = StoreKey::new("deployments/prod/m.json").unwrap();
    assert!(matches!(
        store.get_if_changed(&key, None).await.unwrap(),
        Fetched::Absent
    ));
    let e1 = store
        .put(
            &key,
            Bytes::from_static(b"{\"g\":1}"),
            Precondition::IfAbsent,
        )
        .await
        .unwrap();
    let Fetched::Changed(o) = store.get_if_changed(&key, None).await.unwrap() else {
        panic!("a read without an ETag returns the object")
    };
    assert_eq!((&o.bytes[..], &o.etag), (&b"{\"g\":1}"[..], &e1));
    assert!(matches!(
        store.get_if_changed(&key, Some(&e1)).await.unwrap(),
        Fetched::Unchanged
    ));
    let e2 = store
        .put(
            &key,
            Bytes::from_static(b"{\"g\":2}"),
            Precondition::IfMatch(e1.clone()),
        )
        .await
        .unwrap();
    let Fetched::Changed(o) = store.get_if_changed(&key, Some(&e1)).await.unwrap() else {
        panic!("a changed object is returned")
    };
    assert_eq!((&o.bytes[..], o.etag), (&b"{\"g\":2}"[..], e2));
}

async fn register_resolve_and_dedup(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "wine").await;
    assert!(matches!(
        reg.create_model(
            NewModel {
                name: "wine".into(),
                ..Default::default()
            },
            "bob"
        )
        .await,
        Err(RegistryError::ModelExists { .. })
    ));

    let manifest = serde_json::json!({
        "model": "wine", "semver": "1.4.0", "target": "quality",
        "features": ["a", "b", "c"],
        "lineage": {"datasets": [{"uri": "dir://.falaj/datasets/wine.csv", "digest": "sha256:00ff"}], "code_commit": "abc123",
                    "hyperparameters": {"epochs": 3}},
        "metrics": {"accuracy": 0.91}
    });
    let mut r = registration("wine", support::onnx_bytes(1), "ana");
    r.manifest = Some((
        "manifest.json".into(),
        Bytes::from(serde_json::to_vec(&manifest).unwrap()),
    ));
    let v1 = reg.register(r, no_progress()).await.unwrap();
    assert_eq!(v1.version.version, 1);
    assert_eq!(v1.version.semver, "1.4.0");
    assert!(v1.blob_created);
    assert_eq!(
        v1.version.signature.inputs[0].shape,
        vec!["batch".to_string(), "3".into()]
    );
    assert_eq!(v1.version.format.opset, 17);
    assert_eq!(v1.version.lineage.code_commit.as_deref(), Some("abc123"));
    assert_eq!(v1.version.metrics["accuracy"], 0.91);
    assert_eq!(v1.version.region, "me-central-1");
    assert!(v1.version.manifest_digest.is_some());

    // Same bytes again: a new version, but no second copy of the blob.
    let v2 = reg
        .register(
            registration("wine", support::onnx_bytes(1), "bob"),
            no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(v2.version.version, 2);
    assert_eq!(v2.version.semver, "2.0.0");
    assert!(!v2.blob_created);
    assert_eq!(v2.version.digest, v1.version.digest);
    let blobs = list_all(reg.store().as_ref(), "blobs/").await.unwrap();
    assert_eq!(
        blobs.len(),
        2,
        "artifact + manifest, deduplicated: {blobs:?}"
    );

    // The blob holds exactly the artifact's bytes.
    let blob = reg
        .store()
        .get(&layout::blob(v1.version.digest_hex()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.bytes.as_ref(), support::onnx_bytes(1).as_slice());

    // Streaming from a file gives the same digest.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), support::onnx_bytes(1)).unwrap();
    let mut r = registration("wine", vec![], "ana");
    r.artifact = Artifact::File(tmp.path().to_path_buf());
    let v3 = reg.register(r, no_progress()).await.unwrap();
    assert_eq!(v3.version.digest, v1.version.digest);

    let latest: ModelRef = "wine".parse().unwrap();
    assert_eq!(reg.resolve(&latest).await.unwrap().version, 3);
    let by_num: ModelRef = "wine@2".parse().unwrap();
    assert_eq!(reg.resolve(&by_num).await.unwrap().author, "bob");
    let missing: ModelRef = "wine@9".parse().unwrap();
    assert!(matches!(
        reg.resolve(&missing).await,
        Err(RegistryError::VersionNotFound { version: 9, .. })
    ));
    let nomodel: ModelRef = "nope@1".parse().unwrap();
    assert!(matches!(
        reg.resolve(&nomodel).await,
        Err(RegistryError::ModelNotFound { .. })
    ));
    assert_eq!(
        reg.versions("wine", &VersionFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );

    // A second registry (no caches) sees the same state.
    let other = f.registry().await;
    assert_eq!(other.latest_version("wine").await.unwrap(), 3);
    assert_eq!(other.models().await.unwrap().len(), 1);
}

async fn aliases_move_only_by_compare_and_swap(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "m").await;
    for i in 0..3 {
        reg.register(
            registration("m", support::onnx_bytes(i), "ana"),
            no_progress(),
        )
        .await
        .unwrap();
    }
    let a = reg
        .move_alias("m", "champion", Some(1), Expect::Absent, "ana")
        .await
        .unwrap();
    assert_eq!((a.version, a.previous, a.generation), (Some(1), None, 1));
    let a = reg
        .move_alias("m", "champion", Some(2), Expect::Version(1), "ana")
        .await
        .unwrap();
    assert_eq!((a.version, a.previous, a.generation), (Some(2), Some(1), 2));
    // A stale expectation is a conflict that names the current value.
    match reg
        .move_alias("m", "champion", Some(3), Expect::Version(1), "bob")
        .await
    {
        Err(RegistryError::AliasConflict {
            current: Some(2),
            generation: 2,
            ..
        }) => {}
        other => panic!("expected a conflict naming version 2, got {other:?}"),
    }
    assert!(matches!(
        reg.move_alias("m", "champion", Some(3), Expect::Absent, "bob")
            .await,
        Err(RegistryError::AliasConflict { .. })
    ));
    let r: ModelRef = "m@champion".parse().unwrap();
    assert_eq!(reg.resolve(&r).await.unwrap().version, 2);
    assert!(matches!(
        reg.move_alias("m", "champion", Some(7), Expect::Any, "ana")
            .await,
        Err(RegistryError::VersionNotFound { .. })
    ));
    // Removal is a tombstone; resolving it then fails clearly.
    let gone = reg
        .move_alias("m", "champion", None, Expect::Version(2), "ana")
        .await
        .unwrap();
    assert_eq!((gone.version, gone.previous), (None, Some(2)));
    assert!(matches!(
        reg.resolve(&r).await,
        Err(RegistryError::AliasNotFound { .. })
    ));
    assert!(reg.aliases("m").await.unwrap().is_empty());
    assert!(matches!(
        reg.move_alias("m", "champion", None, Expect::Any, "ana")
            .await,
        Err(RegistryError::AliasNotFound { .. })
    ));
    // The aliases promotion manages are refused here, whoever asks.
    for managed in ["staging", "production", "challenger"] {
        match reg
            .move_alias("m", managed, Some(1), Expect::Any, "ana")
            .await
        {
            Err(e @ RegistryError::ManagedAlias { .. }) => {
                assert_eq!(e.code(), "refused");
                assert!(e.to_string().contains("falaj promote"), "{e}");
            }
            other => panic!("{managed}: expected a refusal, got {other:?}"),
        }
        assert!(reg.alias("m", managed).await.unwrap().is_none());
    }
    // It can be set again, and the generation keeps counting.
    let a = reg
        .move_alias("m", "champion", Some(3), Expect::Absent, "ana")
        .await
        .unwrap();
    assert_eq!(a.generation, 4);
    let actions: Vec<String> = reg
        .audit_events("m")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, e)| e.action)
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "alias.moved").count(), 3);
    assert_eq!(actions.iter().filter(|a| *a == "alias.removed").count(), 1);
}

async fn tags_and_filters(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "t").await;
    for i in 0..3 {
        reg.register(
            registration(
                "t",
                support::onnx_bytes(i),
                if i == 2 { "bob" } else { "ana" },
            ),
            no_progress(),
        )
        .await
        .unwrap();
    }
    reg.tag_version("t", 2, &[("reviewed".into(), "yes".into())], &[], "ana")
        .await
        .unwrap();
    reg.tag_version(
        "t",
        3,
        &[("reviewed".into(), "yes".into()), ("x".into(), "1".into())],
        &[],
        "ana",
    )
    .await
    .unwrap();
    let tags = reg
        .tag_version("t", 3, &[], &["x".into()], "ana")
        .await
        .unwrap();
    assert_eq!(tags.len(), 1);
    let filter = VersionFilter {
        tags: vec![("reviewed".into(), "yes".into())],
        author: None,
    };
    let got: Vec<u64> = reg
        .versions("t", &filter)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(got, vec![2, 3]);
    let filter = VersionFilter {
        tags: vec![("reviewed".into(), "yes".into())],
        author: Some("bob".into()),
    };
    let got: Vec<u64> = reg
        .versions("t", &filter)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(got, vec![3]);
    assert!(matches!(
        reg.tag_version("t", 1, &[("bad key".into(), "v".into())], &[], "ana")
            .await,
        Err(RegistryError::Name(_))
    ));
    let m = reg
        .tag_model("t", &[("team".into(), "risk".into())], &[], "ana")
        .await
        .unwrap();
    assert_eq!(m.tags["team"], "risk");
}

async fn audit_chain_detects_edits(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "a").await;
    reg.register(
        registration("a", support::onnx_bytes(1), "ana"),
        no_progress(),
    )
    .await
    .unwrap();
    reg.move_alias("a", "champion", Some(1), Expect::Any, "ana")
        .await
        .unwrap();
    let events = reg.audit_events("a").await.unwrap();
    let actions: Vec<&str> = events.iter().map(|(_, _, e)| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["model.created", "version.registered", "alias.moved"]
    );
    assert!(reg.verify_audit("a").await.unwrap().is_empty());

    // Someone with write access edits event 2 in place.
    let key = layout::audit_event("a", 2);
    let mut e = events[1].2.clone();
    e.actor = "mallory".into();
    reg.store()
        .put(
            &key,
            Bytes::from(serde_json::to_vec(&e).unwrap()),
            Precondition::None,
        )
        .await
        .unwrap();
    let problems = reg.verify_audit("a").await.unwrap();
    assert!(
        matches!(&problems[0], AuditProblem::Edited { key, .. } if key.ends_with("000000000002.json")),
        "{problems:?}"
    );

    // Overwriting it with garbage is reported, not a panic.
    reg.store()
        .put(&key, Bytes::from_static(b"{not json"), Precondition::None)
        .await
        .unwrap();
    let problems = reg.verify_audit("a").await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("000000000002.json")),
        "{problems:?}"
    );
}

async fn invalid_names_and_keys_write_nothing(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    for bad in ["../escape", "/abs", "a\0b", "a\nb", "UPPER", "", "x/y"] {
        let r = reg
            .create_model(
                NewModel {
                    name: bad.into(),
                    ..Default::default()
                },
                "ana",
            )
            .await;
        assert!(matches!(r, Err(RegistryError::Name(_))), "{bad:?}: {r:?}");
    }
    new_model(&reg, "ok").await;
    reg.register(
        registration("ok", support::onnx_bytes(1), "ana"),
        no_progress(),
    )
    .await
    .unwrap();
    for bad in ["../../x", "a/b", "12"] {
        assert!(
            reg.move_alias("ok", bad, Some(1), Expect::Any, "ana")
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    for bad in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a\\b",
        ".tmp/x",
        "a\u{1}b",
    ] {
        let k = StoreKey::new(bad);
        assert!(k.is_err(), "{bad:?} must not be a key");
    }
    // Only the one model exists; for dir://, nothing appeared beside the store root.
    assert_eq!(reg.models().await.unwrap().len(), 1);
    if let Some(d) = &f._dir {
        let beside: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("store")]);
    }
}

async fn corrupt_json_names_the_key(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "c").await;
    reg.register(
        registration("c", support::onnx_bytes(1), "ana"),
        no_progress(),
    )
    .await
    .unwrap();
    let key = layout::version("c", 1);
    let full = reg.store().get(&key).await.unwrap().unwrap().bytes;
    // Truncated JSON, as a crashed foreign writer might leave it.
    reg.store()
        .put(&key, full.slice(..full.len() / 2), Precondition::None)
        .await
        .unwrap();
    match reg.version("c", 1).await {
        Err(e @ RegistryError::Corrupt { .. }) => {
            assert!(e.to_string().contains("models/c/versions/1.json"), "{e}")
        }
        other => panic!("expected a corrupt-object error, got {other:?}"),
    }
}

async fn invalid_artifact_leaves_no_trace(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "bad").await;
    for garbage in [
        b"not an onnx file at all".to_vec(),
        vec![],
        support::onnx_bytes(1)[..40].to_vec(),
    ] {
        let r = reg
            .register(registration("bad", garbage, "ana"), no_progress())
            .await;
        assert!(
            matches!(r, Err(RegistryError::InvalidArtifact { .. })),
            "{r:?}"
        );
    }
    let mut r = registration("bad", support::onnx_bytes(1), "ana");
    r.manifest = Some(("manifest.json".into(), Bytes::from_static(b"{\"model\": 3")));
    assert!(matches!(
        reg.register(r, no_progress()).await,
        Err(RegistryError::InvalidManifest { .. })
    ));
    let mut r = registration("bad", support::onnx_bytes(1), "ana");
    r.manifest = Some((
        "manifest.json".into(),
        Bytes::from_static(b"{\"model\": \"other\"}"),
    ));
    assert!(matches!(
        reg.register(r, no_progress()).await,
        Err(RegistryError::InvalidManifest { .. })
    ));
    assert_eq!(
        list_all(reg.store().as_ref(), "blobs/").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(reg.latest_version("bad").await.unwrap(), 0);
    assert!(matches!(
        reg.register(
            registration("ghost", support::onnx_bytes(1), "ana"),
            no_progress()
        )
        .await,
        Err(RegistryError::ModelNotFound { .. })
    ));
}

/// Checks the state after concurrent writers: gap-free unique versions, alias consistent
/// with the audit log, audit chain intact.
async fn check_after_race(reg: &Registry, model: &str, writers: u64, applied_moves: usize) {
    let versions: Vec<u64> = reg
        .versions(model, &VersionFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(
        versions,
        (1..=writers).collect::<Vec<_>>(),
        "version numbers must be unique and gap-free"
    );
    let events = reg.audit_events(model).await.unwrap();
    let problems = reg.verify_audit(model).await.unwrap();
    assert!(problems.is_empty(), "audit chain broken: {problems:?}");
    let seqs: Vec<u64> = events.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let registered = events
        .iter()
        .filter(|(_, _, e)| e.action == "version.registered")
        .count();
    assert_eq!(registered as u64, writers);
    // Intents withdrawn after a lost compare-and-swap are not moves.
    let aborted: Vec<u64> = events
        .iter()
        .filter(|(_, _, e)| e.action == falaj_core::audit::ABORTED)
        .map(|(_, _, e)| e.details["intent"].as_u64().unwrap())
        .collect();
    let moves: Vec<_> = events
        .iter()
        .filter(|(_, s, e)| e.action == "alias.moved" && !aborted.contains(s))
        .collect();
    assert_eq!(
        moves.len(),
        applied_moves,
        "every applied move is audited exactly once"
    );
    let alias = reg.alias(model, "champion").await.unwrap().map(|(a, _)| a);
    // Audit appends of racing moves may land in either order; the generation orders them.
    let last_move = moves
        .iter()
        .max_by_key(|(_, _, e)| e.details["generation"].as_u64());
    match (alias, last_move) {
        (None, None) => {}
        (Some(a), Some((_, _, last))) => {
            assert_eq!(a.generation as usize, applied_moves);
            assert_eq!(last.details["to"], serde_json::json!(a.version));
        }
        (a, m) => panic!("alias {a:?} disagrees with the audit log {m:?}"),
    }
}

async fn concurrent_writers_in_threads(b: Backend) {
    const WRITERS: u64 = 16;
    let f = Arc::new(Fixture::new(b).await);
    new_model(&f.registry().await, "race").await;
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let reg = f.registry().await;
            let v = reg
                .register(
                    registration("race", support::onnx_bytes(i as u32), &format!("w{i}")),
                    no_progress(),
                )
                .await
                .unwrap();
            // Read the alias, then try to move it from what was read: a compare-and-swap.
            let seen = reg
                .alias("race", "champion")
                .await
                .unwrap()
                .and_then(|(a, _)| a.version);
            let expect = seen.map_or(Expect::Absent, Expect::Version);
            match reg
                .move_alias(
                    "race",
                    "champion",
                    Some(v.version.version),
                    expect,
                    &format!("w{i}"),
                )
                .await
            {
                Ok(_) => true,
                Err(RegistryError::AliasConflict { current, .. }) => {
                    assert_ne!(
                        current, seen,
                        "a conflict must report a value other than the one expected"
                    );
                    false
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += usize::from(t.await.unwrap());
    }
    assert!(applied >= 1);
    check_after_race(&f.registry().await, "race", WRITERS, applied).await;
}

async fn concurrent_writers_in_processes(b: Backend) {
    const WRITERS: u64 = 16;
    let f = Fixture::new(b).await;
    new_model(&f.registry().await, "race").await;
    let writers: Vec<String> = (0..WRITERS).map(|i| format!("w{i}")).collect();
    let writers: Vec<&str> = writers.iter().map(String::as_str).collect();
    support::grant(&f.registry().await, &writers, Role::DataScientist).await;
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for i in 0..WRITERS {
        let path = dir.path().join(format!("m{i}.onnx"));
        std::fs::write(&path, support::onnx_bytes(100 + i as u32)).unwrap();
        // Each process registers, then moves the alias from what it reads (CAS).
        let uri = f.uri.clone();
        let bin = env!("CARGO_BIN_EXE_falaj");
        let script = format!(
            "set -e; out=$(\"{bin}\" --as w{i} push race {p}); v=$(echo \"$out\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"version\"][\"version\"])'); \
             seen=$(\"{bin}\" alias list race | python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin) if x[\"alias\"]==\"champion\"]; print(a[0][\"version\"] if a else \"none\")'); \
             \"{bin}\" --as w{i} alias set race champion $v --expect $seen",
            p = path.display()
        );
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .env("FALAJ_STORE", &uri)
            .env("FALAJ_JSON", "1");
        if let Some(e) = &f.endpoint {
            c.env("FALAJ_S3_ENDPOINT", e);
        }
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        children.push(c.spawn().unwrap());
    }
    let mut applied = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => applied += 1,
            Some(3) => assert!(
                stderr.contains("\"conflict\"") && stderr.contains("now at"),
                "conflict must name the current value: {stderr}"
            ),
            other => panic!("writer failed with {other:?}: {stderr}"),
        }
    }
    assert!(applied >= 1);
    check_after_race(&f.registry().await, "race", WRITERS, applied).await;
}

async fn killed_upload_leaves_no_version_and_no_blob(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "big").await;
    support::grant(&reg, &["pusher"], Role::DataScientist).await;
    // A valid ONNX header followed by a large initializer: the upload takes a while.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.onnx");
    write_big_onnx(&path, 768 << 20);
    let mut child = f
        .cli()
        .args(["--as", "pusher", "push", "big"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has started writing.
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let busy = match b {
            Backend::Dir => f
                ._dir
                .as_ref()
                .map(|d| {
                    std::fs::read_dir(d.path().join("store/.tmp"))
                        .map(|r| r.count() > 0)
                        .unwrap_or(false)
                })
                .unwrap_or(false),
            Backend::S3 => started.elapsed().as_millis() > 600,
        };
        if busy {
            break;
        }
        assert!(started.elapsed().as_secs() < 20, "upload never started");
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the upload finished before it could be killed; make the file larger"
    );
    assert_eq!(
        reg.latest_version("big").await.unwrap(),
        0,
        "no version record after a killed upload"
    );
    assert_eq!(
        list_all(reg.store().as_ref(), "blobs/").await.unwrap(),
        Vec::<String>::new(),
        "no visible blob"
    );
    // The registry still works afterwards.
    reg.register(
        registration("big", support::onnx_bytes(1), "ana"),
        no_progress(),
    )
    .await
    .unwrap();
}

fn write_big_onnx(path: &Path, bytes: u64) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    falaj_core::onnx::write_padded_model(f, bytes).unwrap();
}

// ---- backend-specific ----

#[tokio::test]
async fn dir_store_missing_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", d.path().join("nope").display());
    let e = store::open(&uri, &OpenOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("falaj model create"), "{e}");
    let e = store::open("ftp://x", &OpenOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidUri { .. }));
}

#[tokio::test]
async fn dir_store_outside_allowed_regions_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", d.path().display());
    let opts = OpenOptions {
        allowed: AllowedRegions::parse("eu-west-1"),
        create: true,
        endpoint: None,
    };
    store::open(&uri, &opts).await.unwrap();
    // Recorded as eu-west-1 at creation; the UAE-only default refuses it.
    let e = store::open(&uri, &OpenOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Residency(_)), "{e}");
}

#[tokio::test]
async fn dir_store_refuses_symlinks() {
    let f = Fixture::new(Backend::Dir).await;
    let reg = f.registry().await;
    new_model(&reg, "s").await;
    let root = f._dir.as_ref().unwrap().path().join("store");
    let outside = tempfile::tempdir().unwrap();
    // A directory link: a write through it would land outside the root.
    std::os::unix::fs::symlink(outside.path(), root.join("models/s/approvals")).unwrap();
    let key = StoreKey::new("models/s/approvals/1/ann.json").unwrap();
    let err = reg
        .store()
        .put(&key, Bytes::from_static(b"{}"), Precondition::IfAbsent)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    // A file link: a read through it would leak what it points at.
    let secret = outside.path().join("signing.key");
    std::fs::write(&secret, "00").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("models/s/aliases.json")).unwrap();
    let err = reg
        .store()
        .get(&StoreKey::new("models/s/aliases.json").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Symlink { .. }), "{err}");
    // Listings skip links.
    let keys = list_all(reg.store().as_ref(), "models/s/").await.unwrap();
    assert_eq!(keys, vec!["models/s/model.json".to_string()]);
}

#[tokio::test]
async fn dir_store_removal_and_reorder_are_detected() {
    let f = Fixture::new(Backend::Dir).await;
    let reg = f.registry().await;
    new_model(&reg, "r").await;
    for i in 0..3 {
        reg.register(
            registration("r", support::onnx_bytes(i), "ana"),
            no_progress(),
        )
        .await
        .unwrap();
    }
    let root = f._dir.as_ref().unwrap().path().join("store");
    let ev = |s: u64| root.join(layout::audit_event("r", s).as_str());
    // Swap events 2 and 3.
    let (a, b) = (std::fs::read(ev(2)).unwrap(), std::fs::read(ev(3)).unwrap());
    std::fs::write(ev(2), &b).unwrap();
    std::fs::write(ev(3), &a).unwrap();
    let p = reg.verify_audit("r").await.unwrap();
    assert!(
        matches!(&p[0], AuditProblem::Misplaced { key, inner: 3 } if key.ends_with("000000000002.json")),
        "{p:?}"
    );
    std::fs::write(ev(2), &a).unwrap();
    std::fs::write(ev(3), &b).unwrap();
    assert!(reg.verify_audit("r").await.unwrap().is_empty());
    // Remove the last event (model.created + 3 registrations = 4): the head still says 4.
    let last = std::fs::read(ev(4)).unwrap();
    std::fs::remove_file(ev(4)).unwrap();
    let p = reg.verify_audit("r").await.unwrap();
    assert!(
        matches!(
            &p[..],
            [AuditProblem::Truncated {
                head: 4,
                last: 3,
                ..
            }]
        ),
        "{p:?}"
    );
    // Removing the head too is named as well.
    let head = root.join(layout::audit_head("r").as_str());
    let head_bytes = std::fs::read(&head).unwrap();
    std::fs::remove_file(&head).unwrap();
    let p = reg.verify_audit("r").await.unwrap();
    assert!(
        matches!(&p[..], [AuditProblem::HeadMissing { .. }]),
        "{p:?}"
    );
    std::fs::write(&head, head_bytes).unwrap();
    std::fs::write(ev(4), last).unwrap();
    assert!(reg.verify_audit("r").await.unwrap().is_empty());
    // Remove event 2.
    std::fs::remove_file(ev(2)).unwrap();
    let p = reg.verify_audit("r").await.unwrap();
    assert!(
        matches!(&p[0], AuditProblem::Missing { missing: 2, .. }),
        "{p:?}"
    );
}

/// A writer killed between an alias move's audit event (the intent) and the alias write:
/// the real CLI process aborts there, and the next `audit --verify` completes the move.
async fn a_crash_between_event_and_state_is_rolled_forward(b: Backend) {
    let f = Fixture::new(b).await;
    let reg = f.registry().await;
    new_model(&reg, "crash").await;
    reg.register(
        registration("crash", support::onnx_bytes(1), "ana"),
        no_progress(),
    )
    .await
    .unwrap();
    let out = f
        .cli()
        .args(["--as", "ana", "alias", "set", "crash", "champion", "1"])
        .env("FALAJ_FAILPOINT", "after-intent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "the process must die by a signal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reg = f.registry().await;
    assert!(reg.alias("crash", "champion").await.unwrap().is_none());
    let events = reg.audit_events("crash").await.unwrap();
    assert_eq!(events.last().unwrap().2.action, "alias.moved");
    // A read-only verify names the pending move.
    let p = reg.verify_audit("crash").await.unwrap();
    assert!(
        matches!(&p[..], [AuditProblem::Pending { key, .. }] if key == "models/crash/aliases/champion.json"),
        "{p:?}"
    );
    let verify = || {
        let out = f
            .cli()
            .args(["audit", "crash", "--verify"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = verify();
    assert_eq!(
        v["rolled_forward"],
        serde_json::json!(["models/crash/aliases/champion.json"]),
        "{v}"
    );
    let (a, _) = reg.alias("crash", "champion").await.unwrap().unwrap();
    assert_eq!(a.version, Some(1));
    assert_eq!(a.event_seq, Some(events.last().unwrap().1));
    // Settled once: a second verify has nothing to do, and the next move goes on from it.
    assert_eq!(verify()["rolled_forward"], serde_json::json!([]));
    reg.move_alias("crash", "champion", None, Expect::Version(1), "ana")
        .await
        .unwrap();
    assert!(reg.verify_audit("crash").await.unwrap().is_empty());
}

#[tokio::test]
async fn s3_bucket_outside_allowed_regions_is_refused() {
    let bucket = support::s3_bucket("eu-west-1").await;
    let opts = OpenOptions {
        allowed: AllowedRegions::default(),
        create: true,
        endpoint: Some(support::s3_endpoint()),
    };
    let e = store::open(&format!("s3://{bucket}"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Residency(_)), "{e}");
    assert!(e.to_string().contains("eu-west-1"), "{e}");
}

#[tokio::test]
async fn s3_missing_bucket_is_a_clear_error() {
    let opts = OpenOptions {
        allowed: AllowedRegions::default(),
        create: true,
        endpoint: Some(support::s3_endpoint()),
    };
    let e = store::open("s3://falaj-no-such-bucket", &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
}

#[tokio::test]
async fn s3_server_without_conditional_writes_is_refused() {
    support::s3_endpoint(); // sets test credentials
    let endpoint = naive_s3_server().await;
    let opts = OpenOptions {
        allowed: AllowedRegions::default(),
        create: true,
        endpoint: Some(endpoint),
    };
    let e = store::open("s3://any-bucket", &opts).await.unwrap_err();
    assert!(matches!(e, StoreError::NoConditionalWrites { .. }), "{e}");
    assert!(e.to_string().contains("If-None-Match"), "{e}");
}

/// An S3 look-alike that ignores conditional headers: every PUT succeeds.
async fn naive_s3_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Read until the headers and whatever body arrives within a moment.
                loop {
                    match tokio::time::timeout(
                        std::time::Duration::from_millis(50),
                        sock.read(&mut buf),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Err(_) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                        Ok(Err(_)) => return,
                    }
                }
                let req = String::from_utf8_lossy(&got);
                let body = if req.starts_with("GET")
                    && req.lines().next().unwrap_or("").contains("location")
                {
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">me-central-1</LocationConstraint>"
                } else {
                    ""
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn store_keys_never_escape() {
    let names: BTreeSet<&str> = [
        "..", "../a", "a/..", "a/../b", "/a", "a//b", ".hidden", "a/.x",
    ]
    .into_iter()
    .collect();
    for n in names {
        assert!(StoreKey::new(n).is_err(), "{n:?}");
    }
}

/// `falaj push` needs a role that may register, as the webhook and ingest do: without one it
/// exits 6 naming the fix, audits the refusal and writes no version; with one it registers.
#[tokio::test]
async fn push_needs_a_role_that_may_register() {
    let f = Fixture::new(Backend::Dir).await;
    let reg = f.registry().await;
    new_model(&reg, "wine").await;
    support::grant(&reg, &["dana"], Role::DataScientist).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, support::onnx_bytes(3)).unwrap();
    let push = |who: &str| {
        f.cli()
            .args(["--as", who, "push", "wine"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = push("eve");
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"forbidden\"") && err.contains("falaj roles grant eve"),
        "{err}"
    );
    assert!(
        reg.versions("wine", &VersionFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let events = reg.audit_events("wine").await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, _, e)| e.action == "refused" && e.actor == "eve"),
        "{events:?}"
    );
    let out = push("dana");
    assert!(out.status.success(), "{out:?}");
    let versions = reg
        .versions("wine", &VersionFilter::default())
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].author, "dana");
}

/// `falaj whoami` names the identity a command acts as and the roles the store gives it.
#[tokio::test]
async fn whoami_prints_the_identity_and_its_roles() {
    let f = Fixture::new(Backend::Dir).await;
    let reg = f.registry().await;
    support::grant(&reg, &["dana"], Role::DataScientist).await;
    support::grant(&reg, &["dana"], Role::Approver).await;
    let run = |who: &str| {
        let out = f.cli().args(["--as", who, "whoami"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run("dana");
    assert_eq!(v["identity"], "dana");
    assert_eq!(
        v["roles"],
        serde_json::json!(["data-scientist", "approver"])
    );
    assert_eq!(v["from"], "--as");
    assert_eq!(v["verified"], false);
    let v = run("eve");
    assert_eq!(v["roles"], serde_json::json!([]));
}
