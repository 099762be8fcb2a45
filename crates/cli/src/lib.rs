//! `falaj-cli`: what only the `falaj` binary runs, as a library so tests and the trainer's
//! tests can drive it: [`serve`] (the embedded default's webhook and watcher), [`retrain`]
//! (retraining requests handed to `falaj-train`) and [`demo`] (the whole pipeline on one
//! machine). The command line itself is `src/main.rs`.
#![deny(missing_docs)]

pub mod demo;
pub mod retrain;
pub mod serve;
