//! The registry console in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver, against the real `falaj serve` on a store made by the library calls the
//! demo makes (gates with fairness, approvals, a signed production deployment, a version
//! awaiting its approvals, a training curve).
//!
//! An approver decides from the version page alone and approves there; the author is
//! refused; an ML engineer promotes a canary and sees the deployment move; a rejection
//! stops a promotion; the audit chain verifies. Screenshots of each page land in
//! `target/console/` (CI keeps them; `docs/console/` has one of each).
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `scripts/test.sh` installs them).
//! `FALAJ_CHROMEDRIVER` and `FALAJ_CHROMIUM` name other binaries.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;
mod serve_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use falaj::Expect;
use falaj::deploy::DeployKey;
use falaj::promotion::{self, Promotion};
use falaj_core::promotion::{Role, Stage};
use falaj_gates::{self as gates, Holdout, Validation};
use gates_fixtures::*;
use serde_json::{Value, json};
use serve_support::{http, start_serve};

const MODEL: &str = "diabetes";
const TOKENS: [(&str, &str); 5] = [
    ("ann", "ann-console-token-0123456789"),
    ("bob", "bob-console-token-0123456789"),
    ("carol", "carol-console-token-0123456789"),
    ("mel", "mel-console-token-0123456789"),
    ("eve", "eve-console-token-0123456789"),
];

fn token(who: &str) -> &'static str {
    TOKENS.iter().find(|(w, _)| *w == who).unwrap().1
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shots() -> PathBuf {
    let d = root().join("target/console");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver and one headless Chromium session.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = wd(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(base: &str) -> Self {
        let bin = std::env::var("FALAJ_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium =
            std::env::var("FALAJ_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port();
        let driver = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): install Debian's chromium and chromium-driver (scripts/test.sh does), or set FALAJ_CHROMEDRIVER")
            });
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}
        }}});
        let (code, v) = wd(&addr, "POST", "/session", &caps.to_string());
        assert_eq!(code, 200, "no browser session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        let b = Self {
            driver,
            addr,
            session,
            base: base.into(),
        };
        // Fail fast rather than wait for an element that is not there.
        b.call(
            "POST",
            "timeouts",
            json!({"implicit": 0, "pageLoad": 30000}),
        );
        b
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("/session/{}/{path}", self.session);
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (code, v) = wd(&self.addr, method, &url, &body);
        assert_eq!(code, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, path: &str) {
        self.call(
            "POST",
            "url",
            json!({"url": format!("{}{path}", self.base)}),
        );
    }

    fn path(&self) -> String {
        let url = self.call("GET", "url", Value::Null);
        url.as_str()
            .unwrap()
            .trim_start_matches(&self.base)
            .to_string()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "elements",
            json!({"using": "css selector", "value": css}),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("not an element: {e}"))
                .to_string()
        })
        .collect()
    }

    fn find(&self, css: &str) -> String {
        let all = self.find_all(css);
        if all.is_empty() {
            let text = self.call(
                "POST",
                "execute/sync",
                json!({"script": "return document.body.innerText", "args": []}),
            );
            panic!(
                "no element {css} on {}; the page says:\n{}",
                self.path(),
                text.as_str().unwrap_or_default()
            );
        }
        all[0].clone()
    }

    fn text_of(&self, id: &str) -> String {
        self.call("GET", &format!("element/{id}/text"), Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn text(&self, css: &str) -> String {
        self.text_of(&self.find(css))
    }

    fn texts(&self, css: &str) -> Vec<String> {
        self.find_all(css).iter().map(|e| self.text_of(e)).collect()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("element/{e}/clear"), json!({}));
        self.call("POST", &format!("element/{e}/value"), json!({"text": text}));
    }

    /// Clicks a button that submits a form, and waits for the page that answers it.
    fn click(&self, css: &str) {
        let e = self.find(css);
        self.script("document.documentElement.dataset.stale = '1'; return 0");
        self.call("POST", &format!("element/{e}/click"), json!({}));
        let started = Instant::now();
        loop {
            let fresh = self.script(
                "return document.readyState === 'complete' && !document.documentElement.dataset.stale",
            );
            if fresh == json!(true) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no page answered the click on {css}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", "execute/sync", json!({"script": js, "args": []}))
    }

    fn window(&self, w: u32, h: u32) {
        self.call("POST", "window/rect", json!({"width": w, "height": h}));
    }

    /// A screenshot of the whole page: the window grows to the page's height for it.
    fn screenshot(&self, name: &str) {
        let rect = self.call("GET", "window/rect", Value::Null);
        let h = self
            .script("return document.documentElement.scrollHeight")
            .as_u64()
            .unwrap();
        let w = rect["width"].as_u64().unwrap() as u32;
        self.window(
            w,
            (h as u32 + 140).max(rect["height"].as_u64().unwrap() as u32),
        );
        let png = self.call("GET", "screenshot", Value::Null);
        self.window(w, rect["height"].as_u64().unwrap() as u32);
        let bytes = falaj_webhook::http::base64_decode(png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::write(shots().join(format!("{name}.png")), bytes).unwrap();
    }

    fn sign_in(&self, who: &str) {
        self.goto("/ui/login");
        self.type_into("#token", token(who));
        self.click("#signin");
        assert_eq!(self.text("#identity"), who, "signed in as {who}");
    }

    fn sign_out(&self) {
        self.click("header form button");
        assert_eq!(self.path(), "/ui/login");
    }

    fn flash(&self) -> String {
        self.text("#flash")
    }
}

/// One WebDriver command: chromedriver keeps its connections open, so the answer is read by
/// its Content-Length, not to the end of the stream.
fn wd(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).unwrap();
    (status, serde_json::from_slice(&buf).unwrap_or(Value::Null))
}

fn key_at(dir: &Path) -> DeployKey {
    DeployKey::load_or_create(&dir.join("signing.key")).unwrap()
}

fn promo(v: u64, to: Stage, canary: Option<u8>) -> Promotion {
    Promotion {
        model: MODEL.into(),
        version: v,
        to,
        canary,
        blue_green: false,
        runtime: falaj_core::deployment::Runtime::Sandbox,
        expect: Expect::Any,
        actor: "mel".into(),
    }
}

async fn validate(e: &Env, v: u64) {
    let r = gates::validate(
        &e.reg,
        Validation {
            model: MODEL.into(),
            version: v,
            holdout: Holdout::Path(dataset("diabetes.csv")),
            policy: None,
            actor: "mel".into(),
        },
    )
    .await
    .unwrap();
    assert!(r.passed, "{r:?}");
}

/// diabetes@1 in production (approved by bob and carol, signed); v2 by ann, validated, with
/// a training curve, awaiting approvals; v3 by ann, validated.
async fn store(e: &Env) {
    promotion::grant(&e.reg, "root", "ann", Role::DataScientist)
        .await
        .unwrap();
    promotion::grant(&e.reg, "root", "carol", Role::Approver)
        .await
        .unwrap();
    for (name, description) in [
        (
            MODEL,
            "diabetes progression in a year (regression; fairness by sex)",
        ),
        ("bc", "breast cancer screening classifier"),
    ] {
        let m = falaj::NewModel {
            name: name.into(),
            description: description.into(),
            owner: "clinical-ml".into(),
            ..Default::default()
        };
        e.reg.create_model(m, "root").await.unwrap();
    }
    let policy = std::fs::read_to_string(policy_fixture("diabetes.toml")).unwrap();
    attach_policy(&e.reg, MODEL, &policy).await;
    // A second model, registered and validated against its own policy: the list has two rows.
    attach_policy(&e.reg, "bc", "[metrics]\naccuracy = { min = 0.9 }\n").await;
    let bc = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    gates::validate(
        &e.reg,
        Validation {
            model: "bc".into(),
            version: bc,
            holdout: Holdout::Path(dataset("breast_cancer.csv")),
            policy: None,
            actor: "mel".into(),
        },
    )
    .await
    .unwrap();
    let mut f = diabetes();
    // The training distribution drift compares against (the graph takes raw features).
    let (header, rows) = read_csv(&dataset("diabetes.csv"));
    let column = |name: &str| -> Vec<f64> {
        let c = header.iter().position(|h| h == name).unwrap();
        rows.iter().map(|r| r[c].parse().unwrap()).collect()
    };
    let (mut mean, mut std) = (Vec::new(), Vec::new());
    for name in &f.manifest.features {
        let x = column(name);
        let m = x.iter().sum::<f64>() / x.len() as f64;
        mean.push(m);
        std.push((x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt());
    }
    f.manifest.standardization = Some(falaj_core::manifest::Standardization {
        mean,
        std,
        folded_into_graph: true,
    });
    let v1 = register(&e.reg, MODEL, &f, "sam").await;
    validate(e, v1).await;
    for who in ["bob", "carol"] {
        promotion::approve(&e.reg, MODEL, v1, Stage::Production, "", who)
            .await
            .unwrap();
    }
    promotion::promote(
        &e.reg,
        &key_at(e.dir.path()),
        promo(v1, Stage::Production, None),
    )
    .await
    .unwrap();
    edge_reports(e, &f, v1).await;
    // The per-epoch history falaj-train records in the manifest (`extra.epochs`).
    let epochs: Vec<Value> = (1..=12)
        .map(|i| {
            let i = f64::from(i);
            json!({"epoch": i as u64, "train_loss": 1.0 / i, "val_loss": 1.1 / i + 0.02, "val_rmse": 80.0 - i})
        })
        .collect();
    f.manifest.extra.insert("epochs".into(), json!(epochs));
    let v2 = register(&e.reg, MODEL, &f, "ann").await;
    validate(e, v2).await;
    let v3 = register(&e.reg, MODEL, &f, "ann").await;
    validate(e, v3).await;
}

/// What two edge nodes write for v1 at generation 1: feature sketches of the holdout's rows
/// (the third window of edge-a shifted, as drifted traffic is) and live windows.
async fn edge_reports(e: &Env, f: &Fitted, v1: u64) {
    let (header, rows) = read_csv(&dataset("diabetes.csv"));
    let cols: Vec<usize> = f
        .manifest
        .features
        .iter()
        .map(|name| header.iter().position(|h| h == name).unwrap())
        .collect();
    let n = cols.len();
    let windows = [
        ("edge-a", "20261204T100000000Z", 0.0),
        ("edge-a", "20261204T100500000Z", 0.0),
        ("edge-a", "20261204T101000000Z", 1.5),
        ("edge-b", "20261204T100000000Z", 0.0),
    ];
    for (node, stamp, shift) in windows {
        let mut w = falaj_core::sketch::SketchWindow::for_model(
            Some(&f.manifest),
            n,
            ("prod", node, MODEL, v1),
            stamp.into(),
        );
        for r in &rows {
            let row: Vec<f64> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let x: f64 = r[*c].parse().unwrap();
                    let std = f
                        .manifest
                        .standardization
                        .as_ref()
                        .map_or(1.0, |s| s.std[i]);
                    x + shift * std
                })
                .collect();
            w.add_row(&row);
        }
        let key = falaj_core::sketch::telemetry_key("prod", node, MODEL, stamp, v1);
        put_object(&e.reg, &key, serde_json::to_vec(&w).unwrap()).await;
        let live =
            falaj_core::live::VariantWindow::new(("prod", node, MODEL), v1, "champion", 1, stamp);
        let key = falaj_core::live::window_key(&live, stamp);
        put_object(&e.reg, &key, serde_json::to_vec(&live).unwrap()).await;
    }
}

/// The real `falaj serve` on the test's store, with the people's tokens configured.
/// Its output lines are kept open: a server that prints into a closed pipe would die.
fn serve(e: &Env) -> (serve_support::Server, serve_support::Lines, String) {
    let cfg = e.dir.path().join("webhook.json");
    let tokens: Vec<Value> = TOKENS
        .iter()
        .map(|(w, t)| json!({"identity": w, "sha256": falaj_webhook::token_digest(t)}))
        .collect();
    std::fs::write(&cfg, json!({ "tokens": tokens }).to_string()).unwrap();
    let uri = format!("dir://{}", e.dir.path().join("store").display());
    start_serve(&uri, &cfg, e.dir.path(), &[])
}

fn get_json(addr: &str, path: &str, who: &str) -> (u16, Value) {
    http(
        addr,
        "GET",
        path,
        &[
            ("Authorization", format!("Bearer {}", token(who))),
            ("Accept", "application/json".into()),
        ],
        b"",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approver_decides_and_approves_in_the_browser_and_the_deployment_moves() {
    let e = env().await;
    store(&e).await;
    let (_server, _lines, addr) = serve(&e);
    let b = Browser::start(&format!("http://{addr}"));

    // Without a session, a page sends the browser to sign in, and back afterwards.
    b.goto("/ui/models/diabetes");
    assert!(b.path().starts_with("/ui/login?next="), "{}", b.path());
    b.type_into("#token", "not-a-token");
    b.click("#signin");
    assert!(b.flash().contains("not recognised"), "{}", b.flash());
    b.type_into("#token", token("bob"));
    b.click("#signin");
    assert_eq!(b.path(), "/ui/models/diabetes");

    // Models: the production champion and the last gate outcome.
    b.goto("/ui/models");
    let row = b.text("tr[data-model=diabetes]");
    assert!(row.contains("v3"), "latest version: {row}");
    assert_eq!(b.text("tr[data-model=diabetes] td.production"), "v1");
    assert!(row.contains("passed"), "{row}");
    assert_eq!(b.find_all("#models tbody tr").len(), 2);
    b.screenshot("models");
    b.type_into("#q", "DIAB");
    b.click("form[role=search] button");
    assert_eq!(
        b.find_all("#models tbody tr").len(),
        1,
        "the filter keeps diabetes only"
    );
    assert!(b.path().ends_with("?q=DIAB"), "{}", b.path());

    // The version page: gate rows, fairness by group, the training curve, no approvals yet.
    b.goto("/ui/models/diabetes/versions/2");
    let gate_rows = b.texts("#gates tbody tr");
    for gate in [
        "metrics.rmse",
        "metrics.r2",
        "fairness.demographic_parity",
        "fairness.equal_opportunity",
    ] {
        let r = gate_rows
            .iter()
            .find(|r| r.starts_with(gate))
            .unwrap_or_else(|| panic!("no row {gate}: {gate_rows:?}"));
        assert!(r.ends_with("pass"), "{r}");
    }
    assert!(
        gate_rows.iter().any(|r| r.contains("≤ 70")),
        "the rmse threshold: {gate_rows:?}"
    );
    assert_eq!(b.find_all("#gates svg.bar").len(), gate_rows.len());
    assert!(
        b.text("#fairness").contains("selection rate")
            || !b.find_all("#fairness svg rect").is_empty()
    );
    assert_eq!(
        b.find_all("figure.plot svg polyline").len(),
        3,
        "train_loss, val_loss, val_rmse"
    );
    assert_eq!(b.text("#approval-count"), "0");
    assert!(
        b.text("#chain").starts_with("Audit chain verified"),
        "{}",
        b.text("#chain")
    );
    assert!(
        b.text("#lineage").contains("diabetes.csv"),
        "{}",
        b.text("#lineage")
    );
    b.screenshot("version");

    // Bob approves from the page.
    b.type_into(
        "#decide input[name=comment]",
        "metrics and fairness within policy",
    );
    b.click("#approve");
    assert!(
        b.flash().starts_with("Approved diabetes@2 for production"),
        "{}",
        b.flash()
    );
    assert_eq!(b.text("#approval-count"), "1");
    let approvals = b.texts("#approvals tr.approval td.by");
    assert_eq!(approvals, vec!["bob"]);
    b.sign_out();

    // The author is refused, by the gatekeeper, and the count does not move.
    b.sign_in("ann");
    b.goto("/ui/models/diabetes/versions/2");
    b.click("#approve");
    let refused = b.flash();
    assert!(
        refused.starts_with("Refused:") && refused.contains("registered by ann"),
        "{refused}"
    );
    assert_eq!(b.text("#approval-count"), "1");
    b.sign_out();

    // A viewer may look but not approve.
    b.sign_in("eve");
    b.goto("/ui/models/diabetes/versions/2");
    b.click("#approve");
    assert!(b.flash().contains("Refused:"), "{}", b.flash());
    b.sign_out();

    // The second approver; then the ML engineer promotes a 10% canary.
    b.sign_in("carol");
    b.goto("/ui/models/diabetes/versions/2");
    b.click("#approve");
    assert_eq!(b.text("#approval-count"), "2");
    b.sign_out();
    b.sign_in("mel");
    b.goto("/ui/models/diabetes/versions/2");
    b.type_into("#promote input[name=canary]", "10");
    b.click("#promote-button");
    assert!(
        b.flash()
            .starts_with("Promoted diabetes@2 to production as a 10% canary"),
        "{}",
        b.flash()
    );

    // The deployment moved: champion v1 at 90%, challenger v2 at 10%, a new generation.
    b.goto("/ui/deployments");
    let prod = "div.deployment[data-env=prod]";
    assert_eq!(b.text(&format!("{prod} td.champion")), "v1 (90%)");
    assert_eq!(b.text(&format!("{prod} td.challenger")), "v2 (canary, 10%)");
    assert_eq!(b.text(&format!("{prod} td.generation")), "2");
    assert_eq!(
        b.text(&format!("{prod} td.runtime")),
        "champion: sandbox, challenger: sandbox"
    );
    // The nodes' telemetry: both applied generation 1, neither has reported generation 2.
    let nodes = b.texts(&format!("{prod} table.nodes tbody tr"));
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(
        nodes[0].starts_with("edge-a") && nodes[0].contains("not yet"),
        "{nodes:?}"
    );
    let warnings = b.texts(&format!("{prod} div.warn"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("node edge-b last reported generation 1")),
        "{warnings:?}"
    );
    b.screenshot("deployments");

    // Bob rejects v3 with a reason; promoting it is then refused on every path.
    b.sign_out();
    b.sign_in("bob");
    b.goto("/ui/models/diabetes/versions/3");
    b.type_into(
        "#decide input[name=comment]",
        "calibration is off for older patients",
    );
    b.click("#reject");
    assert!(
        b.flash().starts_with("Rejected diabetes@3"),
        "{}",
        b.flash()
    );
    assert_eq!(b.texts("#approvals tr.rejection td.by"), vec!["bob"]);
    b.sign_out();
    b.sign_in("mel");
    b.goto("/ui/models/diabetes/versions/3");
    b.click("#promote-button");
    let refused = b.flash();
    assert!(
        refused.contains("rejected for production by bob") && refused.contains("calibration"),
        "{refused}"
    );
    let (code, body) = http(
        &addr,
        "POST",
        "/v1/models/diabetes/versions/3/promote",
        &[
            ("Authorization", format!("Bearer {}", token("mel"))),
            ("Content-Type", "application/json".into()),
        ],
        br#"{"to":"production"}"#,
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected for production by bob"),
        "{body}"
    );

    // Drift and audit pages render; the chain verifies and names the decisions.
    b.goto("/ui/models/diabetes/drift");
    assert!(b.text("h1").starts_with("Drift of diabetes"));
    // Three windows of v1 (edge-a's and edge-b's first merged), one line per feature drawn,
    // and the threshold.
    assert!(
        !b.find_all("figure.plot svg polyline").is_empty(),
        "{}",
        b.text("main")
    );
    assert_eq!(
        b.find_all("figure.plot svg line[stroke-dasharray]").len(),
        1
    );
    b.screenshot("drift");
    b.goto("/ui/models/diabetes/audit");
    assert!(
        b.text("#chain").starts_with("Audit chain verified"),
        "{}",
        b.text("#chain")
    );
    let actions = b.texts("#events tbody tr td:nth-child(4)");
    for a in ["version.approved", "version.rejected", "deployment.written"] {
        assert!(actions.iter().any(|x| x == a), "no {a} in {actions:?}");
    }
    b.screenshot("audit");

    // A phone-sized window: the version page fits its width (tables scroll in their box).
    b.window(390, 844);
    b.goto("/ui/models/diabetes/versions/2");
    let w = b.script("return [document.documentElement.scrollWidth, window.innerWidth]");
    assert!(
        w[0].as_u64().unwrap() <= w[1].as_u64().unwrap(),
        "the page is wider than the phone: {w}"
    );
    b.screenshot("version-phone");

    // Every page answers JSON with the data it shows.
    let (code, v) = get_json(&addr, "/ui/models/diabetes/versions/2", "eve");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["approvals"].as_array().unwrap().len(), 2);
    let fair = v["report"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "fairness.demographic_parity")
        .unwrap();
    assert!(fair["groups"].as_array().unwrap().len() >= 2, "{fair}");
    let (_, d) = get_json(&addr, "/ui/deployments", "eve");
    let prod = d["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["serving"]["env"] == "prod")
        .unwrap();
    assert_eq!(
        (
            prod["serving"]["challenger"].as_u64(),
            prod["serving"]["weight"].as_u64()
        ),
        (Some(2), Some(10))
    );
    assert!(!prod["key_id"].as_str().unwrap().is_empty());
    for path in [
        "/ui/models",
        "/ui/models/diabetes",
        "/ui/models/diabetes/drift",
        "/ui/models/diabetes/audit",
    ] {
        let (code, v) = get_json(&addr, path, "eve");
        assert_eq!(code, 200, "{path}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_posts_are_refused_and_move_nothing() {
    let e = env().await;
    store(&e).await;
    let (_server, _lines, addr) = serve(&e);
    let cookie = |who: &str| format!("falaj_session={}", token(who));
    let form = |h: &[(&'static str, String)], body: &str| {
        let mut headers = vec![
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("Host", addr.clone()),
        ];
        headers.extend(h.iter().cloned());
        http(
            &addr,
            "POST",
            "/ui/models/diabetes/versions/2/decide",
            &headers,
            body.as_bytes(),
        )
    };
    // A cross-site form: the browser sends the cookie but the page has no CSRF token.
    let (code, v) = form(
        &[("Cookie", cookie("bob"))],
        "to=production&decision=approve",
    );
    assert_eq!(code, 403, "{v}");
    // A CSRF token made for another person, or from another origin, is refused too.
    let (_, page) = get_json(&addr, "/ui/models/diabetes/versions/2", "carol");
    assert_eq!(page["approvals"].as_array().unwrap().len(), 0);
    let (code, _) = form(
        &[
            ("Cookie", cookie("bob")),
            ("Origin", "https://evil.example".into()),
        ],
        "to=production&decision=approve&csrf=x",
    );
    assert_eq!(code, 403);
    // A session cookie with a token nobody holds signs in no one.
    let (code, _) = form(
        &[("Cookie", "falaj_session=guess".into())],
        "to=production&decision=approve",
    );
    assert_eq!(code, 401);
    let reg = &e.reg;
    assert!(
        falaj::access::approvals(reg, MODEL, 2)
            .await
            .unwrap()
            .is_empty(),
        "nothing was approved"
    );
    // A script with its own bearer token needs no CSRF token, and is still subject to the
    // gatekeeper: ann, the author, is refused.
    let (code, v) = http(
        &addr,
        "POST",
        "/ui/models/diabetes/versions/2/decide",
        &[
            ("Authorization", format!("Bearer {}", token("ann"))),
            ("Accept", "application/json".into()),
            ("Content-Type", "application/x-www-form-urlencoded".into()),
        ],
        b"to=production&decision=approve",
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (422, Some("refused")),
        "{v}"
    );
    // A server started without tokens says how to fix that, instead of "wrong token".
    let bare = e.dir.path().join("bare.json");
    std::fs::write(&bare, r#"{"tokens": []}"#).unwrap();
    let uri = format!("dir://{}", e.dir.path().join("store").display());
    let (_bare_server, _bare_lines, bare_addr) = start_serve(&uri, &bare, e.dir.path(), &[]);
    let mut s = std::net::TcpStream::connect(&bare_addr).unwrap();
    let body = "token=anything";
    std::io::Write::write_all(
        &mut s,
        format!("POST /ui/login HTTP/1.1\r\nHost: {bare_addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    )
    .unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut s, &mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 401"), "{page}");
    assert!(
        page.contains("no bearer tokens configured") && page.contains("--webhook-config"),
        "{page}"
    );
    // Path tricks and unknown pages are 404s, not files.
    for p in [
        "/ui/../roles.json",
        "/ui/models/..%2F..%2Froles.json",
        "/ui/models/diabetes/versions/2/../../../../etc",
        "/ui/models/diabetes/drift?env=..%2F..%2Froles",
    ] {
        let (code, _) = get_json(&addr, p, "bob");
        assert!(code == 404 || code == 400, "{p}: {code}");
    }
}
