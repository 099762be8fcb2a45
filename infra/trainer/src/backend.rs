//! Compute backends. One code path: the trainer only ever sees a burn [`Device`]; this module
//! maps the `--backend` option onto one and describes it for the manifest.
//!
//! - `cpu` (default): burn's Flex backend, pure Rust, SIMD and rayon, deterministic for a
//!   given seed on a given machine. Flex replaces the deprecated NdArray backend in burn 0.22.
//! - `cuda[:N]`: burn's CUDA backend with kernel fusion and autotuning, compiled only with
//!   the `cuda` cargo feature (the AWS Batch GPU image). Autotune results persist in the
//!   CubeCL environment directory named by `cubecl.toml`; see `docs/trainer.md`.

use burn::tensor::Device;

use crate::error::ConfigError;

/// Which backend to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Flex, on the CPU.
    Cpu,
    /// CUDA GPU with this index.
    Cuda {
        /// Device index.
        index: usize,
    },
}

impl BackendKind {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let unknown = || ConfigError::Unknown {
            what: "backend",
            value: s.into(),
            expected: "cpu, cuda, cuda:N",
        };
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { index: 0 }),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(|index| Self::Cuda { index })
                    .map_err(|_| unknown()),
                None => Err(unknown()),
            },
        }
    }

    /// Name recorded in the manifest (`flex`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "flex",
            Self::Cuda { .. } => "cuda",
        }
    }

    /// The burn device, or an error if this build lacks the backend.
    pub fn device(self) -> Result<Device, ConfigError> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Self::Cuda { index } => Ok(Device::cuda(index)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda { .. } => Err(ConfigError::BackendUnavailable {
                backend: "cuda".into(),
                hint: "this binary was built without CUDA; build with `cargo build -p falaj-train --release --features cuda` (needs the CUDA toolkit) or use --backend cpu",
            }),
        }
    }

    /// Human-readable device name for the manifest, e.g. `cpu: AMD EPYC 7B13 (2 threads)`.
    pub fn describe(self) -> String {
        match self {
            Self::Cpu => {
                let model = std::fs::read_to_string("/proc/cpuinfo")
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("model name"))
                            .and_then(|l| l.split_once(':'))
                            .map(|(_, v)| v.trim().to_string())
                    })
                    .unwrap_or_else(|| std::env::consts::ARCH.to_string());
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                format!("cpu: {model} ({threads} threads)")
            }
            Self::Cuda { index } => format!("cuda:{index}"),
        }
    }
}
