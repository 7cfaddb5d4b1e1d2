//! The Veritas controller: reconciles `VeritasCanary` and `VeritasEnvironment` resources.
//!
//! - [`decide`]: the pure decision (observed state → actions + new status), routing outputs;
//! - [`analysis`]: the guide's PromQL against Prometheus's HTTP API;
//! - [`observe`] / [`act`]: the reads and writes of one pass; [`reconcile`]: the pass itself;
//! - [`leader`]: Lease leader election; [`telemetry`]: the controller's own metrics;
//! - [`web`]: `/metrics`, `/healthz`, `/readyz`; [`sim`]: a model of the cluster for tests;
//! - [`bluegreen`]: the `VeritasEnvironment` (blue-green) decision, drift and reconcile.

pub mod act;
pub mod analysis;
pub mod bluegreen;
pub mod decide;
pub mod leader;
pub mod observe;
pub mod reconcile;
pub mod sim;
pub mod telemetry;
pub mod web;
