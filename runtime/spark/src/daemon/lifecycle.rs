//! The inference worker's lifecycle as one explicit state machine.
//!
//! The worker, the model it serves and the reason nothing is served used to live in
//! separate fields that had to be kept consistent by hand; a restart that failed left the
//! state `Ready` with no worker, and every request got `E5003 "model state is ready"`.
//! Here the worker exists only inside [`Lifecycle::Serving`], so "ready without a worker"
//! cannot be represented, and every transition is a method whose result says what the
//! supervisor must do next.
//!
//! ```text
//!   Unloaded ──load──▶ Loading ──ok──▶ Serving ──worker exit──▶ Restarting ──ok──▶ Serving
//!                         │               ▲  │                      │
//!                       error           load │ (other model:        error
//!                         ▼               │  │  keeps serving)      ▼
//!                       Failed ──load──▶ Loading                  Failed
//!   any ──drain──▶ Stopped
//! ```

use super::supervisor::Worker;
use std::sync::Arc;
use veritas_vocab::ipc::{ModelInfo, ModelState};
use veritas_vocab::ErrorBody;

/// Where the worker is in its life.
pub enum Lifecycle {
    /// No model was asked for yet.
    Unloaded,
    /// A model is being verified and loaded while nothing is served.
    Loading { model: String },
    /// A worker serves `model`.
    Serving {
        worker: Arc<Worker>,
        model: ModelInfo,
        sandbox: Option<serde_json::Value>,
    },
    /// The serving worker died (`cause`); the model is being re-verified and a new worker
    /// started. Nothing is served meanwhile.
    Restarting {
        model: ModelInfo,
        cause: ErrorBody,
        attempt: u32,
    },
    /// Nothing is served: the last load or restart failed with `error`. A `models load`
    /// leaves this state.
    Failed {
        error: ErrorBody,
        model: Option<ModelInfo>,
    },
    /// Drained for shutdown; nothing is started any more.
    Stopped,
}

/// What the supervisor does after a worker exited.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// Start a new worker for the model (the state is now `Restarting`).
    Restart,
    /// Nothing: the worker was not the serving one, or the runtime is stopping.
    Ignore,
}

impl Lifecycle {
    /// The coarse state operators see (`health`, metrics). A restart shows as `loading`:
    /// the vocabulary's states are a published contract.
    pub fn model_state(&self) -> ModelState {
        match self {
            Lifecycle::Unloaded | Lifecycle::Stopped => ModelState::Unloaded,
            Lifecycle::Loading { .. } | Lifecycle::Restarting { .. } => ModelState::Loading,
            Lifecycle::Serving { .. } => ModelState::Ready,
            Lifecycle::Failed { .. } => ModelState::Failed,
        }
    }

    pub fn worker(&self) -> Option<&Arc<Worker>> {
        match self {
            Lifecycle::Serving { worker, .. } => Some(worker),
            _ => None,
        }
    }

    /// The model served, being restarted, or that failed.
    pub fn model(&self) -> Option<&ModelInfo> {
        match self {
            Lifecycle::Serving { model, .. } | Lifecycle::Restarting { model, .. } => Some(model),
            Lifecycle::Failed { model, .. } => model.as_ref(),
            _ => None,
        }
    }

    /// The model [`Lifecycle::model_state`] is about: the one served, restarting, loading
    /// or failed. A load of another model that is still running, or that failed, while one
    /// is served changes nothing here: the served model's state is the one to report.
    pub fn state_model(&self) -> Option<&str> {
        match self {
            Lifecycle::Loading { model } => Some(model),
            _ => self.model().map(|m| m.name.as_str()),
        }
    }

    pub fn sandbox(&self) -> Option<&serde_json::Value> {
        match self {
            Lifecycle::Serving { sandbox, .. } => sandbox.as_ref(),
            _ => None,
        }
    }

    /// The error that keeps the runtime from serving, if any.
    pub fn error(&self) -> Option<&ErrorBody> {
        match self {
            Lifecycle::Failed { error, .. } => Some(error),
            Lifecycle::Restarting { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// A load was asked for. A served model keeps being served until the new one is ready.
    pub fn begin_load(&mut self, name: &str) {
        match self {
            Lifecycle::Serving { .. } | Lifecycle::Restarting { .. } | Lifecycle::Stopped => {}
            _ => {
                *self = Lifecycle::Loading {
                    model: name.to_string(),
                }
            }
        }
    }

    /// A worker is ready for `model`; returns the worker it replaces (to be shut down).
    pub fn serving(
        &mut self,
        worker: Arc<Worker>,
        model: ModelInfo,
        sandbox: Option<serde_json::Value>,
    ) -> Option<Arc<Worker>> {
        let old = std::mem::replace(
            self,
            Lifecycle::Serving {
                worker,
                model,
                sandbox,
            },
        );
        match old {
            Lifecycle::Serving { worker, .. } => Some(worker),
            _ => None,
        }
    }

    /// A load failed. A served model is untouched (the failure is reported separately);
    /// otherwise nothing is served and `error` says why.
    pub fn load_failed(&mut self, error: ErrorBody) {
        match self {
            Lifecycle::Serving { .. } | Lifecycle::Restarting { .. } | Lifecycle::Stopped => {}
            _ => *self = Lifecycle::Failed { error, model: None },
        }
    }

    /// The worker with `pid` exited with `cause`.
    pub fn worker_exited(&mut self, pid: u32, cause: ErrorBody) -> AfterExit {
        match self {
            Lifecycle::Serving { worker, model, .. } if worker.pid == pid => {
                *self = Lifecycle::Restarting {
                    model: model.clone(),
                    cause,
                    attempt: 1,
                };
                AfterExit::Restart
            }
            _ => AfterExit::Ignore,
        }
    }

    /// A restart attempt failed; `retry` says whether another one follows.
    pub fn restart_failed(&mut self, error: ErrorBody, retry: bool) {
        if let Lifecycle::Restarting { model, attempt, .. } = self {
            let (model, attempt) = (model.clone(), *attempt);
            *self = if retry {
                Lifecycle::Restarting {
                    model,
                    cause: error,
                    attempt: attempt + 1,
                }
            } else {
                Lifecycle::Failed {
                    error,
                    model: Some(model),
                }
            };
        }
    }

    /// Shutdown: returns the worker to stop.
    pub fn stop(&mut self) -> Option<Arc<Worker>> {
        match std::mem::replace(self, Lifecycle::Stopped) {
            Lifecycle::Serving { worker, .. } => Some(worker),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn is_stopped(&self) -> bool {
        matches!(self, Lifecycle::Stopped)
    }

    /// Is a restart still wanted (nobody loaded another model or stopped meanwhile)?
    pub fn is_restarting(&self) -> bool {
        matches!(self, Lifecycle::Restarting { .. })
    }

    /// One line for probes and health.
    pub fn describe(&self) -> String {
        match self {
            Lifecycle::Unloaded => "no model loaded".into(),
            Lifecycle::Loading { model } => format!("model {model} loading"),
            Lifecycle::Serving { model, .. } => format!("serving {}@{}", model.name, model.version),
            Lifecycle::Restarting {
                model,
                cause,
                attempt,
            } => format!(
                "inference worker restarting for {}@{} (attempt {attempt}) after: {cause}",
                model.name, model.version
            ),
            Lifecycle::Failed { error, .. } => format!("model failed: {error}"),
            Lifecycle::Stopped => "shutting down".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veritas_vocab::ErrorCode;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "tiny".into(),
            version: "1".into(),
            file: "tiny.gguf".into(),
            sha256: String::new(),
            format: "gguf".into(),
            size_bytes: 1,
            n_ctx: 8,
            n_vocab: 3,
        }
    }

    fn err(code: ErrorCode) -> ErrorBody {
        ErrorBody::new(code, "x")
    }

    #[test]
    fn a_failed_restart_is_failed_not_ready() {
        let mut l = Lifecycle::Restarting {
            model: info(),
            cause: err(ErrorCode::InferenceFailed),
            attempt: 1,
        };
        assert_eq!(l.model_state(), ModelState::Loading);
        assert!(l.worker().is_none());
        l.restart_failed(err(ErrorCode::ModelLoadFailed), true);
        assert!(matches!(l, Lifecycle::Restarting { attempt: 2, .. }));
        l.restart_failed(err(ErrorCode::ModelLoadFailed), false);
        assert_eq!(l.model_state(), ModelState::Failed);
        assert_eq!(l.error().unwrap().code, ErrorCode::ModelLoadFailed);
        assert_eq!(l.model().unwrap().name, "tiny");
        // A load leaves the failed state.
        l.begin_load("tiny");
        assert_eq!(l.model_state(), ModelState::Loading);
    }

    #[test]
    fn the_state_names_the_served_model_while_another_loads_or_fails() {
        let mut l = Lifecycle::Restarting {
            model: info(),
            cause: err(ErrorCode::InferenceFailed),
            attempt: 1,
        };
        l.begin_load("other");
        l.load_failed(err(ErrorCode::ModelLoadFailed));
        assert_eq!(l.state_model(), Some("tiny"));
        let mut l = Lifecycle::Unloaded;
        l.begin_load("other");
        assert_eq!(l.state_model(), Some("other"));
        l.load_failed(err(ErrorCode::ModelLoadFailed));
        assert_eq!(
            l.state_model(),
            None,
            "the caller names the model that failed"
        );
    }

    #[test]
    fn load_failures_do_not_touch_a_restart_or_stop() {
        let mut l = Lifecycle::Unloaded;
        l.begin_load("a");
        l.load_failed(err(ErrorCode::ModelLoadFailed));
        assert_eq!(l.model_state(), ModelState::Failed);
        let mut l = Lifecycle::Stopped;
        l.begin_load("a");
        l.load_failed(err(ErrorCode::ModelLoadFailed));
        assert!(l.is_stopped());
        assert_eq!(
            l.worker_exited(1, err(ErrorCode::InferenceFailed)),
            AfterExit::Ignore
        );
    }
}
