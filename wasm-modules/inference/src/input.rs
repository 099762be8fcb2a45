//! Request bodies for `POST /predict`: defined once in `falaj_core::input`, shared with the
//! edge host's input sketches, so what is sketched is exactly what the component served.

pub use falaj_core::input::*;
