//! Shared vocabulary of the Hearthlink CORE Runtime.
//!
//! Every name a user, an alert or a test can see is spelled here once: the guide's error
//! codes ([`ErrorCode`]), metric and label names ([`metrics`], [`labels`]), the IPC messages
//! and their framing ([`ipc`]) and the model manifest ([`manifest`]). Other crates import
//! these constants instead of writing `"E2001"` or a metric name by hand.

pub mod error;
pub mod ipc;
pub mod labels;
pub mod manifest;
pub mod metrics;

pub use error::{ErrorBody, ErrorCode, Severity};
