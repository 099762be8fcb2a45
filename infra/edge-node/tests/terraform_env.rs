//! The Terraform edge nodes start falaj-edge with no arguments and an environment file
//! (`terraform/modules/edge-fleet/user_data.sh.tftpl`). A variable the binary does not read
//! is silently ignored, so a misspelt name leaves a node that never serves, or one that does
//! not pin its key. This reads the template and the binary's `--help` and fails on any
//! `FALAJ_*` name the binary does not take, and on a node without a pinned key.

use std::path::Path;
use std::process::Command;

fn template() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../terraform/modules/edge-fleet/user_data.sh.tftpl");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `NAME=` lines of the environment file the template writes.
fn env_file_names(t: &str) -> Vec<String> {
    let body = t
        .split_once("cat > /etc/falaj-edge.env <<ENV\n")
        .and_then(|(_, rest)| rest.split_once("\nENV\n"))
        .map(|(body, _)| body)
        .expect("the template writes /etc/falaj-edge.env from a heredoc");
    body.lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n.trim().to_string()))
        .collect()
}

#[test]
fn every_variable_the_edge_nodes_set_is_one_falaj_edge_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_falaj-edge"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    // clap wraps long lines: join them so `[env: NAME=` is never split.
    let help = String::from_utf8(help.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let names = env_file_names(&template());
    assert!(names.len() >= 5, "{names:?}");
    let unread: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("FALAJ_") && !help.contains(&format!("[env: {n}=")))
        .collect();
    assert!(
        unread.is_empty(),
        "the edge nodes set {unread:?}, which falaj-edge does not read (its --help lists the variables it reads)"
    );
    for needed in [
        "FALAJ_TRUST_KEY",
        "FALAJ_EDGE_LISTEN",
        "FALAJ_EDGE_COMPONENT",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "{needed} not set: {names:?}"
        );
    }
}
