//! Shared by the falaj-edge tests: the inference component, one compiled-code cache for
//! the suite, a node started as a real process, and plain HTTP/1.1 over loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub fn component() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = std::env::var_os("FALAJ_EDGE_COMPONENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/wasm/falaj-inference.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the inference component first with scripts/wasm-component.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The wasi:nn build beside [`component`] (`falaj-inference-nn.wasm`).
pub fn component_nn() -> PathBuf {
    let plain = component();
    let path = plain.with_file_name(format!(
        "{}-nn.wasm",
        plain.file_stem().unwrap().to_string_lossy()
    ));
    assert!(
        path.exists(),
        "{} is missing: scripts/wasm-component.sh builds it beside the plain component",
        path.display()
    );
    path
}

/// One compiled-component cache for every node the tests start: cranelift compiles the
/// component once for the whole suite, not once per test.
pub fn code_cache() -> PathBuf {
    static COMPILED: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/edge-tests/code-cache");
    COMPILED.call_once(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_falaj-edge"))
            .args(["--precompile", "--memory-mb", "96", "--deadline-ms", "1500"])
            .arg("--component")
            .arg(component())
            .arg("--code-cache")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "falaj-edge --precompile failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    dir
}

impl Edge {
    /// Starts `falaj-edge` for `production` on `store`, trusting `trust_key` (hex), staging
    /// under `cache`, with `extra_args` and `extra_env`; waits for its first line. The
    /// component is [`component`] unless `extra_args` names one with `--component`.
    pub fn start(
        store: &str,
        cache: &Path,
        trust_key: &str,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Edge {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_falaj-edge"));
        if !extra_args.contains(&"--component") {
            cmd.arg("--component").arg(component());
        }
        cmd.args(["--store", store, "--env", "production"])
            .args(["--listen", "127.0.0.1:0", "--node", "edge-test-1"])
            .arg("--cache")
            .arg(cache)
            .arg("--code-cache")
            .arg(code_cache())
            .args(["--trust-key", trust_key])
            .args(["--poll-ms", "100", "--sketch-secs", "1"])
            .args(["--deadline-ms", "1500", "--memory-mb", "96"])
            .args(extra_args)
            .env("FALAJ_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let start: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("falaj-edge's first line is not JSON ({e}): {line:?}"));
        let addr = start["listening"].as_str().unwrap().to_string();
        Edge { child, addr, start }
    }
}

pub struct Edge {
    pub child: Child,
    pub addr: String,
    pub start: Value,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Edge {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: edge\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}
