//! `server.max_connections` as a semaphore a reload may resize. Growing adds
//! permits; shrinking forgets the free ones and, for those in use, owes the
//! rest: a connection that ends while a debt is owed gives its permit up
//! instead of back. So the limit shrinks as connections close, and no open
//! connection is cut for it (as nginx's old workers keep theirs).
//!
//! And the process's open-files limit, which bounds connections too: a soft
//! limit of 256 or 1024 (launchd, many shells) under `max_connections` would
//! let idle sockets exhaust descriptors before the connection limit sheds
//! any. `serve` raises it to the hard limit, as Go programs do at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct ConnectionLimit {
    semaphore: Arc<Semaphore>,
    /// The limit in force (only the accept loop resizes).
    size: usize,
    /// Permits still to forget after a shrink, as connections end.
    owed: Arc<AtomicUsize>,
}

/// One connection's slot; released on drop, or given up while a debt is owed.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl ConnectionLimit {
    pub fn new(size: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
            owed: Arc::default(),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn try_acquire(&self) -> Option<Slot> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// Waits for a slot; `None` only if the semaphore were closed (never).
    pub async fn acquire(&self) -> Option<Slot> {
        let permit = self.semaphore.clone().acquire_owned().await.ok()?;
        Some(self.slot(permit))
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            owed: self.owed.clone(),
        }
    }

    pub fn resize(&mut self, size: usize) {
        if size > self.size {
            let mut grow = size - self.size;
            // Pay a debt first: those permits were never given up.
            let paid = take_up_to(&self.owed, grow);
            grow -= paid;
            self.semaphore.add_permits(grow);
        } else if size < self.size {
            let shrink = self.size - size;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.owed.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        self.size = size;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && take_up_to(&self.owed, 1) == 1
        {
            permit.forget();
        }
    }
}

/// Takes up to `n` from `counter`; returns how many were taken.
fn take_up_to(counter: &AtomicUsize, n: usize) -> usize {
    let mut taken = 0;
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
        taken = owed.min(n);
        Some(owed - taken)
    });
    taken
}

/// Raises the soft open-files limit to the hard one (at most 1 048 576, and
/// macOS's 10 240 where the kernel refuses more); the limit in force after,
/// `None` where it cannot be read (not unix).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        const CEILING: u64 = 1 << 20;
        const MACOS_OPEN_MAX: u64 = 10_240;
        let limit = getrlimit(Resource::Nofile);
        let hard = limit.maximum.unwrap_or(CEILING).min(CEILING);
        let current = limit.current.unwrap_or(CEILING);
        if current >= hard {
            return Some(current);
        }
        for wanted in [hard, hard.min(MACOS_OPEN_MAX)] {
            let raised = Rlimit {
                current: Some(wanted),
                maximum: limit.maximum,
            };
            if wanted > current && setrlimit(Resource::Nofile, raised).is_ok() {
                return Some(wanted);
            }
        }
        Some(current)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrink_waits_for_connections_to_end_and_a_growth_pays_the_debt_first() {
        let mut limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().expect("slot");
        let b = limit.try_acquire().expect("slot");
        limit.resize(1);
        drop(a);
        assert!(limit.try_acquire().is_none(), "a's permit paid the debt");
        drop(b);
        let c = limit.try_acquire().expect("one slot under the new limit");
        assert!(limit.try_acquire().is_none());
        limit.resize(3);
        let d = limit.try_acquire().expect("grown");
        let e = limit.try_acquire().expect("grown");
        assert!(limit.try_acquire().is_none());
        // Shrink with a debt, then grow before it is paid.
        limit.resize(1);
        limit.resize(2);
        drop((c, d));
        let f = limit
            .try_acquire()
            .expect("e alone is in use under a limit of 2");
        assert!(limit.try_acquire().is_none(), "e and f: the limit of 2");
        drop(e);
        assert!(limit.try_acquire().is_some());
        drop(f);
    }
}
