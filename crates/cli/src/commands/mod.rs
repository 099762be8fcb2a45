//! One module per command group; each turns its arguments into library calls and prints
//! the result through [`crate::output::Out`].

pub(crate) mod embedded;
pub(crate) mod gates;
pub(crate) mod promotion;
pub(crate) mod registry;
pub(crate) mod residency;
