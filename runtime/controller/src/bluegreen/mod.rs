//! Blue-green: the `VeritasEnvironment` half of the controller.
//!
//! - [`decide`]: the switch as a recorded state machine, a pure function of observed state;
//! - [`drift`]: differences between the environments (pure);
//! - [`observe`] / [`probe`] / [`act`]: the reads, the health probes and the writes of a pass;
//!   [`reconcile`]: the pass (status written before acting) and the controller loop;
//! - [`sim`]: a model of the cluster for tests.

pub mod act;
pub mod decide;
pub mod drift;
pub mod observe;
pub mod probe;
pub mod reconcile;
pub mod sim;
