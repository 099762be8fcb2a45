//! Input preprocessing, as the training manifest describes it: defined once in
//! `falaj_core::preprocess`, shared with the gates so a model is gated on exactly the inputs
//! the component gives it.

pub use falaj_core::preprocess::{Preprocess, PreprocessError, safe_scale};
