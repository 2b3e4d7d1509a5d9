//! Where `file` check_applys do their blocking filesystem calls: a queue served by at most
//! `MAX_RUNNERS` runners on tokio's blocking pool.
//!
//! One `spawn_blocking` per job costs a thread wake-up and a context switch each. A runner here
//! takes jobs until the queue is empty, so a backlog (thousands of files to write and fsync)
//! is served by the runners already awake; a new runner starts only while more jobs wait than
//! runners are about to take one, up to the cap. The cap keeps a graph
//! of thousands of files converging at once from running hundreds of threads contending for a
//! few cores and one directory lock, while still overlapping slow calls (fsync).
//! A job whose caller has gone away (cancelled) before it started is skipped: nothing changes
//! the machine on behalf of a check_apply nobody awaits any more. Never blocks an async worker.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// How many runners may work at once.
const MAX_RUNNERS: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    /// Runners started and not yet ended.
    runners: usize,
    /// Runners inside a job (the others are about to take one).
    busy: usize,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    jobs: VecDeque::new(),
    runners: 0,
    busy: 0,
});

fn lock() -> MutexGuard<'static, Queue> {
    // Jobs run outside the lock and catch their panics: the queue is never left half-updated.
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a job produced no result.
#[derive(Debug, thiserror::Error)]
pub(super) enum PoolError {
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("the blocking pool is shutting down")]
    Gone,
}

/// How many runners have been started (for tests).
#[cfg(test)]
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` on a blocking thread and returns its result.
pub(super) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PoolError> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        if tx.is_closed() {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
            PoolError::Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into()),
            )
        });
        let _ = tx.send(result);
    });
    let start_runner = {
        let mut q = lock();
        q.jobs.push_back(job);
        // More jobs waiting than runners about to take one: another runner helps, so slow
        // jobs (fsync) overlap.
        let wanted = q.runners < MAX_RUNNERS && q.jobs.len() > q.runners - q.busy;
        if wanted {
            q.runners += 1;
        }
        wanted
    };
    if start_runner {
        #[cfg(test)]
        STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut slot = Slot { counted: true };
        // Not awaited: the runner ends by itself once the queue is empty, and every job's
        // result travels through its own channel.
        drop(tokio::task::spawn_blocking(move || runner(&mut slot)));
    }
    rx.await.map_err(|_| PoolError::Gone)?
}

/// A runner's place in `Queue::runners`. A runner gives it up itself, under the same lock as
/// it sees the queue empty (so no job is ever left without one); dropping a slot still
/// counted (a runner that never ran: the runtime was shutting down) gives it up too.
struct Slot {
    counted: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.counted {
            lock().runners -= 1;
        }
    }
}

/// Takes jobs until there are none left.
fn runner(slot: &mut Slot) {
    let mut finished = false;
    loop {
        let job = {
            let mut q = lock();
            if finished {
                q.busy -= 1;
            }
            match q.jobs.pop_front() {
                Some(job) => {
                    q.busy += 1;
                    job
                }
                None => {
                    q.runners -= 1;
                    slot.counted = false;
                    return;
                }
            }
        };
        // Jobs catch their own panics, so `busy` is always given back.
        job();
        finished = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    use super::*;

    /// Generous: only a broken pool waits this long.
    const DEADLINE: Duration = Duration::from_secs(20);

    // One test only: the pool is process-wide, and counting runners needs it to itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_overlap_up_to_the_cap_and_a_backlog_is_drained_by_them() {
        let before = STARTED.load(Ordering::Relaxed);
        // Slow jobs overlap: all MAX_RUNNERS of them must be inside their job at once for
        // `entered` to open. They stay there until `release`.
        let entered = Arc::new(Barrier::new(MAX_RUNNERS + 1));
        let release = Arc::new(Barrier::new(MAX_RUNNERS + 1));
        let blocked: Vec<_> = (0..MAX_RUNNERS)
            .map(|i| {
                let (e, r) = (entered.clone(), release.clone());
                tokio::spawn(run(move || {
                    e.wait();
                    r.wait();
                    i
                }))
            })
            .collect();
        let e = entered.clone();
        tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || e.wait()))
            .await
            .expect("the cap's worth of jobs never ran at once")
            .unwrap();

        // Jobs queued behind busy runners are taken by them as they finish: no new runner.
        let burst: Vec<_> = (0..2_000u64)
            .map(|i| tokio::spawn(run(move || i * 2)))
            .collect();
        let start = Instant::now();
        while lock().jobs.len() < 2_000 {
            assert!(start.elapsed() < DEADLINE, "the burst was never queued");
            tokio::task::yield_now().await;
        }
        let r = release.clone();
        tokio::task::spawn_blocking(move || r.wait()).await.unwrap();
        for (i, job) in blocked.into_iter().enumerate() {
            assert_eq!(job.await.unwrap().unwrap(), i);
        }
        for (i, job) in burst.into_iter().enumerate() {
            assert_eq!(job.await.unwrap().unwrap(), i as u64 * 2);
        }
        assert_eq!(STARTED.load(Ordering::Relaxed) - before, MAX_RUNNERS);

        // A panic is that job's error, not the pool's end.
        let err = run(|| panic!("boom")).await.unwrap_err();
        assert_eq!(err.to_string(), "panicked: boom");
        assert_eq!(run(|| 7).await.unwrap(), 7);
    }
}
