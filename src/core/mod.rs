//! The plain-Rust core: no napi here (CI greps for it), so everything is
//! tested with `cargo test` and reusable outside Node.

pub mod atomic;
pub mod batch;
pub mod clock;
pub mod clock_rows;
pub mod engine;
pub mod error;
pub mod hlc;
pub mod kept;
pub mod meta;
pub mod metrics;
pub mod ordinals;
pub mod patches;
pub mod protocol;
pub mod ranges;
pub mod runs;
pub mod schema;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod tx;
pub mod value;
