//! `falaj serve` for tests: the real binary on a free loopback port, and one-shot HTTP/1.1
//! requests to it.

#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; the status and the JSON body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts the real `falaj serve --json` on a free loopback port: the running server, its
/// remaining output lines, and its address.
pub fn start_serve(
    store: &str,
    cfg: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Server, Lines, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_falaj"))
        .args([
            "--store",
            store,
            "--json",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--poll-ms", "100", "--webhook-config"])
        .arg(cfg)
        .env("FALAJ_SIGNING_KEY", dir.join("signing.key"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let server = Server(child);
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = first["listening"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    (server, lines, addr)
}

pub fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Authorization", format!("Bearer {token}")),
        ("Content-Type", "application/json".into()),
    ]
}
