//! The pages, as HTML: server-rendered, no script, one small stylesheet inline, readable in
//! a phone-sized window (tables scroll sideways inside their box; plots scale).

use falaj_core::policy::Bound;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::data::{
    AuditPage, DeploymentView, DeploymentsPage, DriftPage, ModelPage, ModelRow, ModelsPage,
    Serving, VersionPage,
};
use crate::svg::{Series, gate_bar, line_chart, num, rate_bars};

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c2529;background:#fafafa}
header{background:#12343b;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header .who{margin-left:auto;font-size:.9rem}
header form{display:inline}
header button{background:none;border:1px solid #9fb8bd;color:#fff;border-radius:4px;padding:.1rem .5rem;cursor:pointer}
main{padding:1rem;max-width:1100px;margin:0 auto}
h1{font-size:1.4rem;margin:.2rem 0 .8rem}
h2{font-size:1.1rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #cfd8dc;padding-bottom:.2rem}
a{color:#0d47a1}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e0e6e8;vertical-align:top}
th{background:#eef3f4;font-weight:600;white-space:nowrap}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.pass{color:#1b5e20;font-weight:600}.fail{color:#b71c1c;font-weight:600}
.pill{display:inline-block;border-radius:10px;padding:0 .5rem;font-size:.85rem;background:#e3eaec;margin:0 .2rem .2rem 0}
.muted{color:#607d8b}
.flash{padding:.6rem .8rem;border-radius:4px;margin-bottom:1rem}
.flash.ok{background:#e8f5e9;border:1px solid #a5d6a7}.flash.err{background:#ffebee;border:1px solid #ef9a9a}
.warn{background:#fff8e1;border:1px solid #ffe082;padding:.4rem .6rem;border-radius:4px;margin:.3rem 0}
.cards{display:flex;flex-wrap:wrap;gap:1rem}
.card{background:#fff;border:1px solid #dfe6e8;border-radius:6px;padding:.7rem .9rem;flex:1 1 300px;min-width:0}
form.act{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.4rem 0}
form.act label{display:flex;flex-direction:column;font-size:.85rem}
input,select,textarea,button{font:inherit}
input[type=text],input[type=password],input[type=number],textarea,select{padding:.3rem;border:1px solid #b0bec5;border-radius:4px}
button.primary{background:#12343b;color:#fff;border:0;border-radius:4px;padding:.4rem .9rem;cursor:pointer}
button.danger{background:#b71c1c;color:#fff;border:0;border-radius:4px;padding:.4rem .9rem;cursor:pointer}
svg.chart{width:100%;max-width:680px;height:auto;background:#fff;border:1px solid #e0e6e8}
figure.plot{margin:.5rem 0 1rem}
ul.legend{list-style:none;padding:0;margin:.3rem 0;display:flex;flex-wrap:wrap;gap:.2rem 1rem;font-size:.85rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
svg.bar{vertical-align:middle;max-width:45vw;height:auto}
svg.rates{width:100%;max-width:340px;height:auto}
.lineage{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem}
.lineage .node{background:#fff;border:1px solid #b0bec5;border-radius:4px;padding:.3rem .5rem;font-size:.9rem;overflow-wrap:anywhere}
.lineage .arrow{color:#607d8b}
code{font-size:.85em;overflow-wrap:anywhere}
nav.pages a,nav.pages span{margin-right:.6rem}
@media (max-width:600px){main{padding:.6rem}th,td{padding:.3rem}}
"#;

/// What every page's frame needs.
pub struct Frame<'a> {
    /// The signed-in identity (none on the sign-in page).
    pub identity: Option<&'a str>,
    /// Their CSRF token, for the sign-out form.
    pub csrf: &'a str,
    /// A message from the last action: (ok, text).
    pub flash: Option<(bool, String)>,
}

/// The page frame: header, navigation, flash, content.
pub fn frame(f: &Frame<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · falaj" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/ui/" { "falaj" }
                    a href="/ui/models" { "Models" }
                    a href="/ui/deployments" { "Deployments" }
                    @if let Some(who) = f.identity {
                        span.who {
                            "Signed in as " strong #identity { (who) } " "
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(f.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    @if let Some((ok, text)) = &f.flash {
                        div.flash.ok[*ok].err[!*ok] #flash role="status" { (text) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The sign-in page.
pub fn login(next: &str, error: Option<&str>) -> Markup {
    let f = Frame {
        identity: None,
        csrf: "",
        flash: error.map(|e| (false, e.to_string())),
    };
    frame(
        &f,
        "Sign in",
        html! {
            h1 { "Sign in" }
            p { "Paste your falaj bearer token: the one the webhook configuration lists by its SHA-256 digest. The console keeps it in a cookie for this site only, for eight hours." }
            form.act method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label { "Token" input #token type="password" name="token" autocomplete="current-password" required; }
                button.primary #signin type="submit" { "Sign in" }
            }
        },
    )
}

/// An error page.
pub fn error(f: &Frame<'_>, status: u16, code: &str, message: &str) -> Markup {
    frame(
        f,
        "Error",
        html! {
            h1 { "Error " (status) }
            p.fail #error-code { (code) }
            p #error-message { (message) }
            p { a href="/ui/models" { "Back to the models" } }
        },
    )
}

fn outcome(passed: Option<bool>) -> Markup {
    match passed {
        Some(true) => html! { span.pass { "passed" } },
        Some(false) => html! { span.fail { "failed" } },
        None => html! { span.muted { "not validated" } },
    }
}

fn serving_cell(s: &[Serving], env: &str) -> Markup {
    match s.iter().find(|x| x.env == env) {
        None => html! { span.muted { "—" } },
        Some(x) => html! {
            "v" (x.champion)
            @if let Some(c) = x.challenger {
                " · " (x.mode) " v" (c) " at " (x.weight) "%"
            }
            @if x.divergence.is_some() { " " span.fail title="the signed deployment and the aliases differ" { "⚠" } }
        },
    }
}

fn model_row(m: &ModelRow) -> Markup {
    html! {
        tr data-model=(m.name) {
            td { a href={ "/ui/models/" (m.name) } { (m.name) } br; span.muted { (m.description) } }
            td { (m.owner) }
            td { @for (a, v) in &m.aliases { span.pill { (a) " → v" (v) } } }
            td.num { @if let Some(l) = m.latest { a href={ "/ui/models/" (m.name) "/versions/" (l) } { "v" (l) } } @else { "—" } }
            td.num.production { (serving_cell(&m.serving, "prod")) }
            td { (outcome(m.last_gate.as_ref().map(|g| g.passed))) }
            td {
                @if m.drift.retrain_requests == 0 { span.muted { "no drift reported" } }
                @else {
                    a href={ "/ui/models/" (m.name) "/drift" } { (m.drift.retrain_requests) " retraining request(s)" }
                    @if !m.drift.drifted.is_empty() { br; span.muted { "last: " (m.drift.drifted.join(", ")) } }
                }
            }
        }
    }
}

/// The models page.
pub fn models(f: &Frame<'_>, p: &ModelsPage) -> Markup {
    frame(
        f,
        "Models",
        html! {
            h1 { "Models" }
            form.act method="get" action="/ui/models" role="search" {
                label { "Filter by name, owner or description" input #q type="text" name="q" value=(p.query); }
                button.primary type="submit" { "Filter" }
                @if !p.query.is_empty() { a href="/ui/models" { "clear" } }
            }
            p.muted { (p.models.len()) " of " (p.total) " models" }
            div.scroll {
                table #models {
                    thead { tr { th { "Model" } th { "Owner" } th { "Aliases" } th { "Latest" } th { "Production" } th { "Last gates" } th { "Drift" } } }
                    tbody { @for m in &p.models { (model_row(m)) } }
                }
            }
        },
    )
}

/// A model's page.
pub fn model(f: &Frame<'_>, p: &ModelPage) -> Markup {
    let m = &p.model;
    frame(
        f,
        &m.name,
        html! {
            h1 { (m.name) }
            p { (m.description) " " span.muted { "owner " (m.owner) } }
            p {
                a href={ "/ui/models/" (m.name) "/deployments" } { "Deployments" } " · "
                a href={ "/ui/models/" (m.name) "/drift" } { "Drift" } " · "
                a href={ "/ui/models/" (m.name) "/audit" } { "Audit log" }
            }
            h2 { "Versions" }
            div.scroll {
                table #versions {
                    thead { tr { th { "Version" } th { "State" } th { "Aliases" } th { "Gates" } th { "Author" } th { "Registered" } } }
                    tbody {
                        @for v in &p.versions {
                            tr {
                                td { a href={ "/ui/models/" (m.name) "/versions/" (v.version) } { "v" (v.version) } " " span.muted { (v.semver) } }
                                td { (v.state) }
                                td { @for a in &v.aliases { span.pill { (a) } } }
                                td { (outcome(v.gates)) }
                                td { (v.author) }
                                td.num { (v.created_at) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn bound_text(b: Option<Bound>) -> String {
    match b {
        Some(Bound::Min(t)) => format!("≥ {}", num(t)),
        Some(Bound::Max(t)) => format!("≤ {}", num(t)),
        None => "—".into(),
    }
}

/// A version's page: the evidence and the decision.
pub fn version(f: &Frame<'_>, p: &VersionPage) -> Markup {
    let v = &p.version;
    let name = &v.model;
    let base = format!("/ui/models/{name}/versions/{}", v.version);
    let fairness: Vec<_> = p
        .report
        .iter()
        .flat_map(|r| r.gates.iter())
        .filter(|g| !g.groups.is_empty())
        .collect();
    let robustness: Vec<_> = p
        .report
        .iter()
        .flat_map(|r| r.gates.iter())
        .filter(|g| g.gate.starts_with("robustness"))
        .collect();
    let mut names: Vec<String> = p
        .curve
        .iter()
        .flat_map(|e| e.values.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    // One plot per scale: the losses together, the metrics that are shares (0 to 1)
    // together, any other metric alone. Timings (`train_seconds`, `samples_per_second`) are
    // not the model's learning: they stay in the JSON.
    names.retain(|n| !n.contains("second"));
    let shares = |k: &String| {
        p.curve
            .iter()
            .filter_map(|e| e.values.get(k))
            .all(|v| (0.0..=1.0).contains(v))
    };
    let (losses, rest): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| n.contains("loss"));
    let (others, alone): (Vec<String>, Vec<String>) = rest.into_iter().partition(shares);
    let series = |keys: &[String]| -> Vec<Series> {
        keys.iter()
            .map(|k| Series {
                name: k.clone(),
                points: p
                    .curve
                    .iter()
                    .filter_map(|e| Some((e.epoch as f64, *e.values.get(k)?)))
                    .collect(),
            })
            .collect()
    };
    let production_approvals = p
        .approvals
        .iter()
        .filter(|a| a.stage == falaj_core::promotion::Stage::Production)
        .count();
    frame(
        f,
        &format!("{name}@{}", v.version),
        html! {
            h1 { a href={ "/ui/models/" (name) } { (name) } " v" (v.version) " " span.muted { (v.semver) } }
            div.cards {
                div.card {
                    div { "State: " strong #state { (p.state) } }
                    div { "Aliases: " @for a in &p.aliases { span.pill { (a) } } @if p.aliases.is_empty() { span.muted { "none" } } }
                    div { "Gates: " (outcome(p.report.as_ref().map(|r| r.passed)))
                        @if let Some(r) = &p.report { span.muted { " (run " (r.run) " of " (p.report_runs) ", " (r.evaluated_at) ")" } } }
                    div { "Approvals for production: " strong #approval-count { (production_approvals) } " of " (p.approvals_needed) " needed" }
                    @if !p.rejections.is_empty() { div.fail { "Rejected by " (p.rejections.iter().map(|r| r.by.as_str()).collect::<Vec<_>>().join(", ")) } }
                }
                div.card {
                    div { "Author: " (v.author) }
                    div { "Registered: " (v.created_at) }
                    div { "Artifact: " code { (v.digest) } " (" (v.size) " bytes)" }
                    div { "Region: " (v.region) }
                    @if let Some(s) = &v.source { div { "Source: " code { (s) } } }
                }
            }

            h2 { "Gate report" }
            @match &p.report {
                None => p.muted { "No gate report yet: run `falaj validate " (name) "@" (v.version) " --data <holdout>`." },
                Some(r) => {
                    @if let Some(e) = &r.error { p.fail { "The model did not run: " (e) } }
                    @if let Some(h) = &r.holdout { p.muted { "Holdout " code { (h.uri) } " " code { (h.digest) } } }
                    div.scroll {
                        table #gates {
                            thead { tr { th { "Gate" } th { "Threshold" } th { "Measured" } th { "" } th { "Result" } } }
                            tbody {
                                @for g in &r.gates {
                                    tr data-gate=(g.gate) {
                                        td { (g.gate) @if !g.detail.is_empty() { br; span.muted { (g.detail) } } }
                                        td.num { (bound_text(g.bound)) }
                                        td.num { @if let Some(m) = g.measured { (num(m)) } @else { "—" } }
                                        td { (gate_bar(g.measured, g.bound, g.passed)) }
                                        td.result { @if g.passed { span.pass { "pass" } } @else { span.fail { "fail" } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }

            @if !fairness.is_empty() {
                h2 { "Fairness by group" }
                div.cards {
                    @let g = fairness[0];
                    div.card #fairness {
                        p { "Selection rate (share predicted favourable)" }
                        (rate_bars("selection rate by group", &g.groups.iter().map(|x| (format!("{} ({})", x.group, x.rows), Some(x.selection_rate))).collect::<Vec<_>>()))
                    }
                    div.card {
                        p { "True-positive rate" }
                        (rate_bars("true-positive rate by group", &g.groups.iter().map(|x| (x.group.clone(), x.true_positive_rate)).collect::<Vec<_>>()))
                    }
                }
            }
            @if !robustness.is_empty() {
                h2 { "Robustness" }
                ul { @for g in &robustness { li { (g.gate) ": drop " @if let Some(m) = g.measured { (num(m)) } " (" (bound_text(g.bound)) ") " @if g.passed { span.pass { "pass" } } @else { span.fail { "fail" } } } } }
            }

            h2 { "Training curve" }
            @if p.curve.is_empty() { p.muted { "Neither the training manifest nor an MLflow run records a per-epoch history." } }
            @else {
                @if let Some(from) = &p.curve_from { p.muted #curve-from { "From the " (from) "." } }
                @if !losses.is_empty() { (line_chart("loss per epoch", &series(&losses), None, "epoch (step)", None)) }
                @if !others.is_empty() { (line_chart("metrics per epoch", &series(&others), None, "epoch (step)", None)) }
                @for k in &alone { (line_chart(&format!("{k} per epoch"), &series(std::slice::from_ref(k)), None, "epoch (step)", None)) }
            }

            h2 { "Lineage" }
            div.lineage #lineage {
                @for d in &p.lineage.datasets { span.node { "dataset " code { (d.uri) } br; code { (d.digest) } } }
                @if p.lineage.datasets.is_empty() { span.node.muted { "no dataset recorded" } }
                @if let Some(parent) = p.lineage.parent_version { span.arrow { "→" } span.node { "parent " a href={ "/ui/models/" (name) "/versions/" (parent) } { "v" (parent) } } }
                span.arrow { "→" }
                span.node { strong { "v" (v.version) } }
                @for d in &p.lineage.deployments { span.arrow { "→" } span.node { a href={ "/ui/models/" (name) "/deployments" } { (d.env) } " " (d.slot) @if let Some(w) = d.weight { " " (w) "%" } " (gen " (d.generation) ")" } }
            }
            @if let Some(c) = &p.lineage.code_commit { p.muted { "code " code { (c) } } }
            @if let Some(t) = &p.lineage.trainer_image { p.muted { "trainer " code { (t) } } }

            h2 { "Approvals" }
            div.scroll {
                table #approvals {
                    thead { tr { th { "Who" } th { "Decision" } th { "Stage" } th { "When" } th { "Comment" } } }
                    tbody {
                        @for a in &p.approvals { tr.approval { td.by { (a.by) } td.pass { "approved" } td { (a.stage) } td.num { (a.at) } td { (a.comment) } } }
                        @for r in &p.rejections { tr.rejection { td.by { (r.by) } td.fail { "rejected" } td { (r.stage) } td.num { (r.at) } td { (r.comment) } } }
                    }
                }
            }
            @if p.approvals.is_empty() && p.rejections.is_empty() { p.muted { "No decisions yet." } }

            h2 { "Decide" }
            p.muted { "Roles and four-eyes are checked by falaj itself, as for the CLI and the webhook: the author cannot approve, and each person counts once." }
            form.act #decide method="post" action={ (base) "/decide" } {
                input type="hidden" name="csrf" value=(f.csrf);
                label { "Stage" select name="to" { option value="production" { "production" } option value="staging" { "staging" } } }
                label { "Comment" input type="text" name="comment" size="30"; }
                button.primary #approve type="submit" name="decision" value="approve" { "Approve" }
                button.danger #reject type="submit" name="decision" value="reject" { "Reject" }
            }
            form.act #promote method="post" action={ (base) "/promote" } {
                input type="hidden" name="csrf" value=(f.csrf);
                label { "Promote to" select name="to" { option value="production" { "production" } option value="staging" { "staging" } } }
                label { "Canary % (production, optional)" input type="number" name="canary" min="1" max="99"; }
                button.primary #promote-button type="submit" { "Promote" }
            }

            h2 { "Audit events of this version" }
            (chain_line(&p.chain, name))
            div.scroll {
                table #version-events {
                    thead { tr { th { "#" } th { "When" } th { "Who" } th { "Action" } th { "Details" } } }
                    tbody { @for e in &p.events { tr { td.num { (e.seq) } td.num { (e.at) } td { (e.actor) } td { (e.action) } td { code { (e.details.to_string()) } } } } }
                }
            }
        },
    )
}

fn chain_line(c: &crate::data::ChainCheck, model: &str) -> Markup {
    html! {
        @if c.intact {
            p #chain.pass { "Audit chain verified: " (c.events) " events, no edit, gap, reordering or truncation." }
        } @else {
            div #chain.warn {
                strong.fail { "Audit chain broken. " }
                "First broken link: " (c.problems[0])
                @if c.problems.len() > 1 { " (and " (c.problems.len() - 1) " more; " a href={ "/ui/models/" (model) "/audit" } { "see the log" } ")" }
            }
        }
    }
}

fn deployment_card(d: &DeploymentView, csrf: &str) -> Markup {
    let s = &d.serving;
    html! {
        div.card.deployment data-env=(s.env) data-model=(d.model) {
            h3 { a href={ "/ui/models/" (d.model) } { (d.model) } " · " (s.env) }
            table {
                tr { th { "Champion" } td.champion { "v" (s.champion) " (" (100 - u32::from(if s.mode == "canary" && s.challenger.is_some() { s.weight } else { 0 })) "%)" } }
                tr { th { "Challenger" } td.challenger { @if let Some(c) = s.challenger { "v" (c) " (" (s.mode) ", " (s.weight) "%)" } @else { "none" } } }
                tr { th { "Generation" } td.generation { (s.generation) } }
                tr { th { "Runtime" } td.runtime { @for (i, (slot, rt)) in s.runtime.iter().enumerate() { @if i > 0 { ", " } (slot) ": " (rt) } } }
                tr { th { "Strategy" } td { (d.strategy) } }
                tr { th { "Signed by key" } td { code { (d.key_id) } } }
                tr { th { "Changed" } td { (d.updated_at) " by " (d.updated_by) } }
                @if !d.history.is_empty() { tr { th { "Previous" } td { @for h in &d.history { "v" (h) " " } } } }
            }
            @for w in &d.warnings { div.warn { "⚠ " (w) } }
            @if d.nodes.is_empty() { p.muted { "No edge node has reported on it yet." } }
            @else {
                div.scroll {
                    table.nodes {
                        thead { tr { th { "Node" } th { "Applied gen " (s.generation) } th { "Last report" } th { "Serving" } } }
                        tbody { @for n in &d.nodes { tr { td { (n.node) } td.num { @if let Some(a) = &n.applied_at { (a) } @else { span.muted { "not yet" } } } td.num { (n.last_seen) @if let Some(g) = n.generation { " (gen " (g) ")" } } td { @for v in &n.versions { "v" (v) " " } } } } }
                    }
                }
            }
            @if s.challenger.is_some() {
                form.act method="post" action={ "/ui/models/" (d.model) "/deployments/" (s.env) "/rollout" } {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Challenger weight %" input type="number" name="weight" min="0" max="100" value=(s.weight); }
                    button.primary type="submit" { "Set weight" }
                }
            }
            form.act method="post" action={ "/ui/models/" (d.model) "/deployments/" (s.env) "/rollback" } {
                input type="hidden" name="csrf" value=(csrf);
                button.danger.rollback type="submit" { "Roll back" }
            }
        }
    }
}

/// The deployments page.
pub fn deployments(f: &Frame<'_>, p: &DeploymentsPage) -> Markup {
    let title = match &p.model {
        Some(m) => format!("Deployments of {m}"),
        None => "Deployments".into(),
    };
    frame(
        f,
        &title,
        html! {
            h1 { (title) }
            @if p.deployments.is_empty() { p.muted { "Nothing is deployed." } }
            div.cards #deployments { @for d in &p.deployments { (deployment_card(d, f.csrf)) } }
        },
    )
}

/// `20261204T172359646Z` as `12-04 17:23` (anything else as it is).
fn short_stamp(stamp: &str) -> String {
    let b = stamp.as_bytes();
    if b.len() >= 13 && b[8] == b'T' && stamp.is_ascii() {
        format!(
            "{}-{} {}:{}",
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13]
        )
    } else {
        stamp.to_string()
    }
}

/// The drift page.
pub fn drift(f: &Frame<'_>, p: &DriftPage) -> Markup {
    let mut features: Vec<(String, f64)> = Vec::new();
    for pt in &p.points {
        for fd in &pt.report.features {
            match features.iter_mut().find(|(n, _)| *n == fd.feature) {
                Some(e) => e.1 = e.1.max(fd.psi),
                None => features.push((fd.feature.clone(), fd.psi)),
            }
        }
    }
    features.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<&String> = features.iter().take(8).map(|(n, _)| n).collect();
    let stamps: Vec<String> = p.points.iter().map(|pt| short_stamp(&pt.stamp)).collect();
    let series: Vec<Series> = shown
        .iter()
        .map(|name| Series {
            name: (*name).clone(),
            points: p
                .points
                .iter()
                .enumerate()
                .filter_map(|(i, pt)| {
                    pt.report
                        .features
                        .iter()
                        .find(|fd| &fd.feature == *name)
                        .map(|fd| (i as f64, fd.psi))
                })
                .collect(),
        })
        .collect();
    frame(
        f,
        &format!("Drift of {}", p.model),
        html! {
            h1 { "Drift of " a href={ "/ui/models/" (p.model) } { (p.model) } " in " (p.env) }
            @if let Some(v) = p.version { p { "Served champion: v" (v) ". PSI per feature for each window of the edge's sketches, against the training distribution; above " (num(p.rule.psi)) " a feature drifts." } }
            @if let Some(n) = &p.note { p.muted { (n) } }
            @if !p.points.is_empty() {
                (line_chart("PSI per feature per window", &series, Some((p.rule.psi, "PSI threshold")), "window", Some(&stamps)))
                @if features.len() > shown.len() { p.muted { "The " (shown.len()) " features with the highest PSI are drawn; every value is in the JSON." } }
            }
            h2 { "Retraining requests" }
            @if p.requests.is_empty() { p.muted { "Drift has not asked for retraining." } }
            @else {
                div.scroll { table #requests {
                    thead { tr { th { "Requested" } th { "Version" } th { "Drifted features" } th { "Key" } } }
                    tbody { @for r in &p.requests { tr { td.num { (r.requested_at) } td { "v" (r.version) } td { (r.drifted.join(", ")) } td { code { (r.key) } } } } }
                } }
            }
        },
    )
}

/// The audit page.
pub fn audit(f: &Frame<'_>, p: &AuditPage) -> Markup {
    let base = format!("/ui/models/{}/audit", p.model);
    let pager = html! {
        nav.pages {
            @if p.page > 1 { a href={ (base) "?page=" (p.page - 1) } { "← newer" } }
            span { "page " (p.page) " of " (p.pages) }
            @if p.page < p.pages { a href={ (base) "?page=" (p.page + 1) } { "older →" } }
        }
    };
    frame(
        f,
        &format!("Audit of {}", p.model),
        html! {
            h1 { "Audit log of " a href={ "/ui/models/" (p.model) } { (p.model) } }
            (chain_line(&p.chain, &p.model))
            @if !p.chain.intact {
                ul #problems { @for pr in &p.chain.problems { li { (pr) } } }
            }
            (pager)
            div.scroll {
                table #events {
                    thead { tr { th { "#" } th { "When" } th { "Who" } th { "Action" } th { "Subject" } th { "Details" } } }
                    tbody { @for e in &p.events { tr { td.num { (e.seq) } td.num { (e.at) } td { (e.actor) } td { (e.action) } td { (e.subject) } td { code { (e.details.to_string()) } } } } }
                }
            }
            (pager)
        },
    )
}
