//! Request admission: a bounded number of requests (`--parallel` running plus `--queue-size`
//! waiting) hold a permit; one more is refused at once with `E3003`, never queued without
//! bound, and nothing is admitted while the daemon drains (`E5003`).
//!
//! Kept free of the runtime's other state so its cost can be measured on its own (the
//! instruction-count benchmarks include this file).

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use veritas_vocab::{ErrorBody, ErrorCode};

/// The bound and its configuration, for the refusal message.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub parallel: u32,
    pub queue_size: u32,
}

impl Bound {
    pub fn capacity(&self) -> u32 {
        self.parallel + self.queue_size
    }
}

/// How a refusal for a full queue begins: what tells it from the other E3003s (a memory
/// ceiling, an answer too large), which a retry would not clear.
pub const QUEUE_FULL: &str = "request queue full";

/// Whether `e` is a refusal for a full queue (worth retrying shortly).
pub fn is_queue_full(e: &ErrorBody) -> bool {
    e.code == ErrorCode::ResourceLimitExceeded && e.detail.starts_with(QUEUE_FULL)
}

/// Admits one request: its permit, to be held until the worker is done with it.
pub fn admit(
    permits: &Arc<Semaphore>,
    draining: bool,
    bound: Bound,
) -> Result<OwnedSemaphorePermit, ErrorBody> {
    if draining {
        return Err(ErrorBody::new(
            ErrorCode::HealthCheckFailed,
            "runtime is shutting down; not accepting requests",
        ));
    }
    permits.clone().try_acquire_owned().map_err(|_| {
        ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!(
                "{QUEUE_FULL}: {} requests admitted (parallel {}, queue {}); retry later",
                bound.capacity(),
                bound.parallel,
                bound.queue_size
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_refuses_at_once_and_draining_refuses_all() {
        let bound = Bound {
            parallel: 1,
            queue_size: 1,
        };
        let permits = Arc::new(Semaphore::new(bound.capacity() as usize));
        let a = admit(&permits, false, bound).unwrap();
        let _b = admit(&permits, false, bound).unwrap();
        let e = admit(&permits, false, bound).unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceLimitExceeded);
        assert!(e.detail.contains("parallel 1, queue 1"), "{}", e.detail);
        drop(a);
        assert!(admit(&permits, false, bound).is_ok());
        assert_eq!(
            admit(&permits, true, bound).unwrap_err().code,
            ErrorCode::HealthCheckFailed
        );
    }
}
