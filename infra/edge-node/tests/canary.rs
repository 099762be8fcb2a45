//! The canary controller end to end, driven by a seeded traffic simulator: a real falaj-edge
//! node on loopback serving a champion and a challenger of the breast-cancer classifier
//! (validated, approved and promoted through the gatekeeper), live windows flushed to a
//! `dir://` store, labels arriving later as feedback CSV, and `falaj::canary::look` deciding
//! every step with no person involved.
//!
//! The simulator knows the truth: for each predicted row it draws whether the variant that
//! answered was right (with that variant's simulated accuracy), and writes the label
//! accordingly. Request keys are seeded, so the split is the same on every run; the
//! controller looks only once every request sent is in the store, so the evidence it judges
//! is the same on every run too (latency aside, which scenario (c) makes large on purpose).
//!
//! (a) a challenger 5 points less accurate is rolled back; (b) an equal one is promoted
//! through every step; (c) one ≥ 3× slower at p99 is rolled back; (d) no traffic holds and
//! never promotes; (e) a node restarted mid-rollout, and a controller that keeps no state,
//! resume from the store. Plus: shadow mode copies traffic and compares, and an A/B split on
//! a cookie keeps its groups.

#[path = "../../../crates/falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;
mod node_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use falaj::Expect;
use falaj::canary::{Action, Look};
use falaj::deploy::DeployKey;
use falaj::promotion::{self, Promotion};
use falaj_core::live::VariantWindow;
use falaj_core::onnx::{GraphProto, ModelProto, NodeProto, float_tensor};
use falaj_core::promotion::{Role, Stage};
use falaj_gates::{self as gates, Holdout, Validation};
use gates_fixtures::*;
use node_support::*;
use prost::Message;
use serde_json::{Value, json};

const MODEL: &str = "bc";
const ROWS_PER_REQUEST: usize = 100;

fn policy(slow_ms: Option<f64>) -> String {
    let mut p = String::from(
        "[metrics]\naccuracy = { min = 0.9 }\n\n[canary]\nsteps = [5, 25, 50, 100]\nmin_samples = 300\nalpha = 0.05\nstep_time_limit_secs = 3600\n",
    );
    if let Some(ms) = slow_ms {
        p += &format!("slow_request_ms = {ms:.3}\n");
    }
    p += "[canary.tolerate]\nerrors = 1.5\nwrong_predictions = 1.25\n";
    if slow_ms.is_some() {
        p += "slow_requests = 2.0\n";
    }
    p
}

/// The simulator's only source of chance: a seeded generator.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(rand::SeedableRng::seed_from_u64(seed))
    }

    fn next(&mut self) -> f64 {
        rand::Rng::random(&mut self.0)
    }
}

/// The breast-cancer classifier with a slow side branch: the same answers (the branch adds
/// 1e-30 times its result to the logits) at many times the arithmetic.
fn slow_variant(f: &Fitted, hidden: usize, layers: usize) -> Fitted {
    let fast = ModelProto::decode(f.onnx.as_slice()).unwrap();
    let mut graph: GraphProto = fast.graph.clone().unwrap();
    let k = f.manifest.classes.len();
    let n = f.manifest.features.len();
    let gemm = graph.node.iter_mut().find(|n| n.op_type == "Gemm").unwrap();
    gemm.output = vec!["logits_fast".into()];
    let mut nodes = vec![NodeProto {
        input: vec!["input".into(), "A".into()],
        output: vec!["h0".into()],
        op_type: "MatMul".into(),
        name: "side_in".into(),
        ..Default::default()
    }];
    for i in 0..layers {
        nodes.push(NodeProto {
            input: vec![format!("h{i}"), "B".into()],
            output: vec![format!("m{i}")],
            op_type: "MatMul".into(),
            name: format!("side_mm{i}"),
            ..Default::default()
        });
        nodes.push(NodeProto {
            input: vec![format!("m{i}")],
            output: vec![format!("h{}", i + 1)],
            op_type: "Relu".into(),
            name: format!("side_relu{i}"),
            ..Default::default()
        });
    }
    nodes.push(NodeProto {
        input: vec![format!("h{layers}"), "C".into()],
        output: vec!["side".into()],
        op_type: "MatMul".into(),
        name: "side_out".into(),
        ..Default::default()
    });
    nodes.push(NodeProto {
        input: vec!["logits_fast".into(), "side".into()],
        output: vec!["logits".into()],
        op_type: "Add".into(),
        name: "join".into(),
        ..Default::default()
    });
    let at = graph.node.iter().position(|n| n.op_type == "Gemm").unwrap() + 1;
    graph.node.splice(at..at, nodes);
    let (h, n64, k64) = (hidden as i64, n as i64, k as i64);
    let a: Vec<f32> = (0..n * hidden)
        .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
        .collect();
    let b: Vec<f32> = (0..hidden * hidden)
        .map(|i| ((i % 7) as f32 - 3.0) / hidden as f32)
        .collect();
    graph.initializer.push(float_tensor("A", &[n64, h], &a));
    graph.initializer.push(float_tensor("B", &[h, h], &b));
    graph
        .initializer
        .push(float_tensor("C", &[h, k64], &vec![1e-30; hidden * k]));
    Fitted {
        onnx: ModelProto {
            graph: Some(graph),
            ..fast
        }
        .encode_to_vec(),
        manifest: f.manifest.clone(),
    }
}

struct Sim {
    e: Env,
    key: DeployKey,
    rows: Vec<Vec<f64>>,
    rng: Rng,
    sent: u64,
    round: u32,
}

impl Sim {
    async fn new(seed: u64, slow_ms: Option<f64>) -> Self {
        let e = env().await;
        promotion::grant(
            &e.reg,
            "root",
            falaj::canary::ROLLOUT_ACTOR,
            Role::MlEngineer,
        )
        .await
        .unwrap();
        attach_policy(&e.reg, MODEL, &policy(slow_ms)).await;
        let (header, cells) = read_csv(&dataset("breast_cancer.csv"));
        let target = header.iter().position(|h| h == "diagnosis").unwrap();
        let rows = cells
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != target)
                    .map(|(_, c)| c.parse::<f64>().unwrap())
                    .collect()
            })
            .collect();
        Self {
            e,
            key: DeployKey::from_seed([7; 32]),
            rows,
            rng: Rng::new(seed),
            sent: 0,
            round: 0,
        }
    }

    fn store_uri(&self) -> String {
        format!("dir://{}", self.e.dir.path().join("store").display())
    }

    /// Registers, validates and approves `f`; promotes it directly or as a canary.
    async fn ship(&self, f: &Fitted, canary: Option<u8>) -> u64 {
        let v = register(&self.e.reg, MODEL, f, "sam").await;
        let r = gates::validate(
            &self.e.reg,
            Validation {
                model: MODEL.into(),
                version: v,
                holdout: Holdout::Path(dataset("breast_cancer.csv")),
                policy: None,
                actor: "sam".into(),
            },
        )
        .await
        .unwrap();
        assert!(r.passed, "{:?}", r.gates);
        let promo = |to| Promotion {
            model: MODEL.into(),
            version: v,
            to,
            canary: None,
            blue_green: false,
            runtime: falaj_core::deployment::Runtime::Sandbox,
            expect: Expect::Any,
            actor: "mel".into(),
        };
        promotion::promote(&self.e.reg, &self.key, promo(Stage::Staging))
            .await
            .unwrap();
        for who in ["ann", "bob"] {
            promotion::approve(&self.e.reg, MODEL, v, Stage::Production, "", who)
                .await
                .unwrap();
        }
        let p = Promotion {
            canary,
            ..promo(Stage::Production)
        };
        promotion::promote(&self.e.reg, &self.key, p).await.unwrap();
        v
    }

    fn node(&self, cache: &str) -> Edge {
        Edge::start(
            &self.store_uri(),
            &self.e.dir.path().join(cache),
            &hex::encode(self.key.public().as_bytes()),
            &["--max-concurrent", "2"],
            &[],
        )
    }

    async fn generation(&self) -> u64 {
        falaj::deploy::read(&self.e.reg, "prod", MODEL)
            .await
            .unwrap()
            .unwrap()
            .0
            .generation
    }

    /// Waits until `edge` serves the store's current generation.
    async fn synced(&self, edge: &Edge) {
        let want = self.generation().await;
        let t0 = Instant::now();
        loop {
            let m = edge.get("/v1/models").json();
            if m["models"][0]["generation"] == want {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "node never reached generation {want}: {m}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The live windows of the current generation in the store.
    async fn windows(&self) -> Vec<VariantWindow> {
        let (m, _) = falaj::deploy::read(&self.e.reg, "prod", MODEL)
            .await
            .unwrap()
            .unwrap();
        falaj::canary::windows(&self.e.reg, "prod", &m)
            .await
            .unwrap()
    }

    /// Sends `requests` requests of seeded rows; labels each predicted row as the variant's
    /// simulated `accuracy` says (by slot); writes the labels as one feedback file; waits
    /// until the node's windows hold every request of this generation.
    async fn round(&mut self, edge: &Edge, requests: usize, accuracy: &BTreeMap<&str, f64>) {
        self.round += 1;
        let mut csv = String::from("request_id,row,label\n");
        for _ in 0..requests {
            let start = (self.rng.next() * self.rows.len() as f64) as usize;
            let batch: Vec<&Vec<f64>> = (0..ROWS_PER_REQUEST)
                .map(|i| &self.rows[(start + i) % self.rows.len()])
                .collect();
            let body = serde_json::to_vec(&json!({ "inputs": batch })).unwrap();
            let key = format!("sim-{}", (self.rng.next() * 1e12) as u64);
            let r = edge.request(
                "POST",
                &format!("/v1/models/{MODEL}/predict"),
                &[
                    ("content-type", "application/json"),
                    ("x-falaj-request-key", &key),
                ],
                &body,
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            self.sent += 1;
            let id = r
                .header("x-falaj-request-id")
                .expect("a request id")
                .to_owned();
            let slot = r.header("x-falaj-slot").unwrap().to_owned();
            let p = accuracy[slot.as_str()];
            let v = r.json();
            for (row, pred) in v["predictions"].as_array().unwrap().iter().enumerate() {
                let label = pred["label"].as_str().unwrap();
                let truth = if self.rng.next() < p {
                    label
                } else if label == "malignant" {
                    "benign"
                } else {
                    "malignant"
                };
                csv += &format!("{id},{row},{truth}\n");
            }
        }
        put_object(
            &self.e.reg,
            &format!("datasets/{MODEL}/feedback/round-{:03}.csv", self.round),
            csv.into_bytes(),
        )
        .await;
        let t0 = Instant::now();
        loop {
            let seen: u64 = self
                .windows()
                .await
                .iter()
                .filter(|w| w.slot != "shadow")
                .map(|w| w.requests)
                .sum();
            if seen >= self.sent {
                assert_eq!(seen, self.sent, "the node counted requests it was not sent");
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the node flushed {seen} of {} requests",
                self.sent
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One look of the controller, as the scheduled function's identity.
    async fn look(&mut self) -> Look {
        let l = falaj::canary::look(
            &self.e.reg,
            &self.key,
            MODEL,
            "prod",
            falaj::canary::ROLLOUT_ACTOR,
        )
        .await
        .unwrap();
        eprintln!(
            "round {}: {:?} {}%->{}%: {}",
            self.round, l.action, l.weight.0, l.weight.1, l.reason
        );
        if l.deployment.is_some() {
            // A new generation: its evidence starts from zero.
            self.sent = 0;
        }
        l
    }

    /// Drives rounds until the controller completes or rolls back; returns every look that
    /// changed something. `restart_at` restarts the node once the weight reaches it.
    async fn run(
        &mut self,
        mut edge: Edge,
        accuracy: BTreeMap<&str, f64>,
        restart_at: Option<u8>,
    ) -> (Vec<Look>, Edge) {
        let mut moves = Vec::new();
        let mut restarted = false;
        for _ in 0..40 {
            self.round(&edge, 100, &accuracy).await;
            let l = self.look().await;
            let done = matches!(l.action, Action::Completed | Action::Rollback);
            if l.deployment.is_some() {
                moves.push(l.clone());
            }
            if done {
                return (moves, edge);
            }
            if !restarted && restart_at.is_some_and(|w| l.weight.1 >= w) {
                // Every request so far is in the store; the new node starts cold from it.
                drop(edge);
                edge = self.node("cache-restarted");
                assert_eq!(edge.start["restored"], 0, "a fresh cache restores nothing");
                restarted = true;
            }
            self.synced(&edge).await;
        }
        panic!("no decision after 40 rounds; moves so far: {moves:?}");
    }

    /// Every live window of `generation`, whatever it routed to.
    async fn windows_of(&self, generation: u64) -> Vec<VariantWindow> {
        let store = self.e.reg.store();
        let mut out = Vec::new();
        for k in falaj::store::list_all(store.as_ref(), "telemetry/prod/")
            .await
            .unwrap()
        {
            if falaj_core::live::window_generation(&k, MODEL) == Some(generation) {
                let key = falaj_core::StoreKey::new(k).unwrap();
                out.push(
                    self.e
                        .reg
                        .get_json::<VariantWindow>(&key)
                        .await
                        .unwrap()
                        .unwrap()
                        .0,
                );
            }
        }
        out
    }

    /// The audit events the controller wrote, with their evidence.
    async fn judged_events(&self) -> Vec<Value> {
        self.e
            .reg
            .audit_events(MODEL)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, _, ev)| {
                ev.actor == falaj::canary::ROLLOUT_ACTOR && ev.action.starts_with("deployment.")
            })
            .map(|(_, _, ev)| json!({"action": ev.action, "details": ev.details}))
            .collect()
    }
}

fn accuracy(champion: f64, challenger: f64) -> BTreeMap<&'static str, f64> {
    [("champion", champion), ("challenger", challenger)]
        .into_iter()
        .collect()
}

/// Both variants fitted on the same data: the challenger differs in its training length.
fn variants() -> (Fitted, Fitted) {
    (
        breast_cancer(),
        fit(
            "breast_cancer.csv",
            "diagnosis",
            falaj_core::manifest::Task::Classification,
            120,
        ),
    )
}

async fn started(seed: u64, slow_ms: Option<f64>, challenger: &Fitted) -> (Sim, Edge, u64, u64) {
    let sim = Sim::new(seed, slow_ms).await;
    let (champion, _) = variants();
    let v1 = sim.ship(&champion, None).await;
    let v2 = sim.ship(challenger, Some(5)).await;
    let edge = sim.node("cache");
    sim.synced(&edge).await;
    (sim, edge, v1, v2)
}

fn assert_every_move_is_signed_and_audited(moves: &[Look], events: &[Value]) {
    assert_eq!(events.len(), moves.len(), "{events:?}");
    for (l, ev) in moves.iter().zip(events) {
        let d = l.deployment.as_ref().unwrap();
        assert_eq!(d.updated_by, falaj::canary::ROLLOUT_ACTOR);
        assert!(d.event_seq.is_some(), "the manifest names its audit event");
        let judge = &ev["details"]["judge"];
        assert_eq!(ev["details"]["judged_generation"], l.generation, "{ev}");
        assert!(
            judge["metrics"].as_array().is_some_and(|m| !m.is_empty()),
            "{ev}"
        );
        assert!(
            judge["tallies"]["champion"]["requests"].as_u64() > Some(0),
            "{ev}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenger_five_points_less_accurate_is_rolled_back() {
    let (_, worse) = variants();
    let (mut sim, edge, v1, _) = started(11, None, &worse).await;
    let (moves, _edge) = sim.run(edge, accuracy(0.90, 0.85), None).await;
    let last = moves.last().unwrap();
    assert_eq!(last.action, Action::Rollback, "{moves:?}");
    let j = last.judgement.as_ref().unwrap();
    let wrong = j
        .metrics
        .iter()
        .find(|m| m.metric == "wrong_predictions")
        .unwrap();
    assert!(wrong.harm >= j.threshold, "{wrong:?}");
    let d = last.deployment.as_ref().unwrap();
    assert_eq!((d.champion.version, d.challenger.as_ref()), (v1, None));
    assert_every_move_is_signed_and_audited(&moves, &sim.judged_events().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equally_good_challenger_is_promoted_through_every_step() {
    let (_, same) = variants();
    let (mut sim, edge, _, v2) = started(22, None, &same).await;
    let (moves, _edge) = sim.run(edge, accuracy(0.90, 0.90), None).await;
    let weights: Vec<u8> = moves.iter().map(|l| l.weight.1).collect();
    assert_eq!(weights, [25, 50, 100], "{moves:?}");
    assert_eq!(moves.last().unwrap().action, Action::Completed);
    let d = moves.last().unwrap().deployment.as_ref().unwrap();
    assert_eq!((d.champion.version, d.challenger.as_ref()), (v2, None));
    assert_every_move_is_signed_and_audited(&moves, &sim.judged_events().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenger_three_times_slower_at_p99_is_rolled_back() {
    // The bound is set from the champion's own latency on this machine: three times its
    // median request. The challenger does many times the arithmetic for the same answers.
    let probe = Sim::new(33, None).await;
    let (champion, _) = variants();
    probe.ship(&champion, None).await;
    let edge = probe.node("cache");
    probe.synced(&edge).await;
    let mut probe = probe;
    probe.round(&edge, 60, &accuracy(0.9, 0.9)).await;
    let mut ms: Vec<f64> = probe
        .windows()
        .await
        .iter()
        .flat_map(|w| w.log.iter().map(|e| e.ms))
        .collect();
    ms.sort_by(f64::total_cmp);
    let bound = (ms[ms.len() / 2] * 3.0).max(0.5);
    drop(edge);

    let slow = slow_variant(&champion, 256, 24);
    let (mut sim, edge, v1, _) = started(33, Some(bound), &slow).await;
    let (moves, _edge) = sim.run(edge, accuracy(0.90, 0.90), None).await;
    let last = moves.last().unwrap();
    assert_eq!(last.action, Action::Rollback, "{moves:?}");
    let slow_m = last
        .judgement
        .as_ref()
        .unwrap()
        .metrics
        .iter()
        .find(|m| m.metric == "slow_requests")
        .unwrap()
        .clone();
    assert!(
        slow_m.harm >= last.judgement.as_ref().unwrap().threshold,
        "{slow_m:?}"
    );
    assert_eq!(last.deployment.as_ref().unwrap().champion.version, v1);
    // The scenario is what it says: the challenger's p99 is at least 3× the champion's.
    let p99 = |slot: &str, ws: &[VariantWindow]| {
        let mut v: Vec<f64> = ws
            .iter()
            .filter(|w| w.slot == slot)
            .flat_map(|w| w.log.iter().map(|e| e.ms))
            .collect();
        v.sort_by(f64::total_cmp);
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    };
    let ws = sim.windows_of(last.generation).await;
    let (a, b) = (p99("champion", &ws), p99("challenger", &ws));
    eprintln!(
        "p99 champion {a:.3} ms, challenger {b:.3} ms ({:.1}x); slow bound {bound:.3} ms",
        b / a
    );
    assert!(
        b >= 3.0 * a,
        "the challenger is not 3x slower at p99: {a} vs {b}"
    );
    let judged = sim.judged_events().await;
    assert_every_move_is_signed_and_audited(&moves, &judged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_holds_and_never_promotes() {
    let (_, same) = variants();
    let (mut sim, _edge, _, _) = started(44, None, &same).await;
    let before = sim.generation().await;
    for _ in 0..3 {
        let l = sim.look().await;
        assert_eq!(l.action, Action::Hold, "{l:?}");
        assert!(l.reason.contains("no traffic"), "{}", l.reason);
    }
    assert_eq!(sim.generation().await, before, "nothing was signed");
    assert!(sim.judged_events().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_mid_rollout_and_a_stateless_controller_resume_from_the_store() {
    let (_, same) = variants();
    let (mut sim, edge, _, v2) = started(55, None, &same).await;
    let (moves, edge) = sim.run(edge, accuracy(0.90, 0.90), Some(25)).await;
    assert_eq!(moves.last().unwrap().action, Action::Completed, "{moves:?}");
    assert_eq!(
        moves
            .last()
            .unwrap()
            .deployment
            .as_ref()
            .unwrap()
            .champion
            .version,
        v2
    );
    // The restarted node serves what the store says.
    sim.synced(&edge).await;
    let m = edge.get("/v1/models").json();
    assert_eq!(m["models"][0]["champion"], v2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_gets_a_copy_of_every_request_is_compared_then_becomes_a_canary() {
    let (_, same) = variants();
    let (mut sim, edge, v1, v2) = started(66, None, &same).await;
    let c = falaj::deploy::shadow(&sim.e.reg, &sim.key, MODEL, "prod", "mel")
        .await
        .unwrap();
    assert_eq!(c.deployment.challenger_weight, 0);
    sim.synced(&edge).await;
    sim.sent = 0;
    let m = edge.get("/v1/models").json();
    assert_eq!(m["models"][0]["shadow"], v2, "{m}");
    // Every answer comes from the champion; the copies are logged under the same ids.
    let champion_only: BTreeMap<&str, f64> = [("champion", 0.9)].into_iter().collect();
    sim.round(&edge, 80, &champion_only).await;
    let t0 = Instant::now();
    loop {
        let ws = sim.windows().await;
        let shadowed: u64 = ws
            .iter()
            .filter(|w| w.slot == "shadow")
            .map(|w| w.requests)
            .sum();
        if shadowed == 80 {
            let ids = |slot: &str| {
                let mut v: Vec<String> = ws
                    .iter()
                    .filter(|w| w.slot == slot)
                    .flat_map(|w| w.log.iter().map(|e| e.id.clone()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(ids("shadow"), ids("champion"));
            assert!(ws.iter().all(|w| w.slot != "challenger"));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{shadowed} of 80 copies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let l = sim.look().await;
    assert!(l.agreement.is_some_and(|a| a > 0.9), "{l:?}");
    assert_eq!(l.tallies["shadow"].labelled, 80 * ROWS_PER_REQUEST as u64);
    assert_eq!(l.action, Action::PromoteStep, "{l:?}");
    let d = l.deployment.as_ref().unwrap();
    assert_eq!(
        (d.champion.version, d.challenger_weight, d.challenger_mode),
        (v1, 5, falaj_core::deployment::ChallengerMode::Canary)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_split_on_a_cookie_keeps_each_user_on_one_side() {
    let (_, same) = variants();
    let (sim, edge, _, _) = started(77, None, &same).await;
    falaj::deploy::rollout(&sim.e.reg, &sim.key, MODEL, "prod", 50, "mel")
        .await
        .unwrap();
    let refused = falaj::deploy::split_key(
        &sim.e.reg,
        &sim.key,
        MODEL,
        "prod",
        Some("query:uid"),
        "mel",
    )
    .await;
    assert!(refused.unwrap_err().to_string().contains("header:<name>"));
    let c = falaj::deploy::split_key(
        &sim.e.reg,
        &sim.key,
        MODEL,
        "prod",
        Some("cookie:uid"),
        "mel",
    )
    .await
    .unwrap();
    assert_eq!(c.deployment.split_key.as_deref(), Some("cookie:uid"));
    sim.synced(&edge).await;
    let body = serde_json::to_vec(&json!({ "inputs": [sim.rows[0]] })).unwrap();
    let mut sides = BTreeMap::new();
    for user in 0..40 {
        let mut seen = Vec::new();
        for attempt in 0..3 {
            let cookie = format!("theme=dark; uid=user-{user}");
            let key = format!("k-{user}-{attempt}");
            let r = edge.request(
                "POST",
                &format!("/v1/models/{MODEL}/predict"),
                &[
                    ("content-type", "application/json"),
                    ("cookie", &cookie),
                    ("x-falaj-request-key", &key),
                ],
                &body,
            );
            assert_eq!(r.status, 200);
            seen.push(r.header("x-falaj-slot").unwrap().to_owned());
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "user {user}: {seen:?}");
        *sides.entry(seen[0].clone()).or_insert(0) += 1;
    }
    assert!(
        sides.len() == 2 && sides.values().all(|n| *n >= 8),
        "{sides:?}"
    );
}
