//! A bounded pool for CPU-heavy work: at most `workers` jobs run (each on a blocking thread, never
//! on the async runtime's threads) and at most `queue` more wait; beyond that a job is refused at
//! once, so that a burst answers 503 instead of piling up memory and latency.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

pub struct Pool {
    pub name: &'static str,
    pub workers: usize,
    pub queue: usize,
    /// Permits for running plus waiting jobs.
    admitted: Arc<Semaphore>,
    /// Permits for running jobs.
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    /// Jobs refused because the queue was full.
    pub rejected: AtomicU64,
    /// Moving average of a job's duration (seconds), for `Retry-After`.
    average_s: Arc<Mutex<f64>>,
}

/// Why a job did not run to completion.
#[derive(Debug)]
pub enum PoolError {
    /// Queue full: the suggested retry delay in seconds.
    Full { retry_after: u64 },
    /// The job panicked.
    Panicked,
}

/// Decrements a gauge when dropped, however the job ends.
struct Gauge(Arc<AtomicUsize>);

impl Gauge {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Gauge(counter.clone())
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    pub fn new(name: &'static str, workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            name,
            workers,
            queue,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            busy: Arc::new(AtomicUsize::new(0)),
            rejected: AtomicU64::new(0),
            average_s: Arc::new(Mutex::new(0.0)),
        }
    }

    /// Jobs admitted but not started.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Runs `job` on a blocking thread once a worker is free; refuses it when the queue is full.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolError> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(PoolError::Full { retry_after: self.retry_after() });
        };
        let waiting = Gauge::enter(&self.waiting);
        let running = self.running.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        drop(waiting);
        let busy = Gauge::enter(&self.busy);
        let average = self.average_s.clone();
        let handle = tokio::task::spawn_blocking(move || {
            // The permits and the gauge live as long as the job, even if the caller goes away.
            let _permits = (admitted, running, busy);
            let start = Instant::now();
            let out = job();
            let mut avg = average.lock().unwrap_or_else(|e| e.into_inner());
            let s = start.elapsed().as_secs_f64();
            *avg = if *avg == 0.0 { s } else { 0.8 * *avg + 0.2 * s };
            out
        });
        handle.await.map_err(|_| PoolError::Panicked)
    }

    /// Roughly how long until a queue slot frees up: the queue ahead divided among the workers.
    fn retry_after(&self) -> u64 {
        let avg = *self.average_s.lock().unwrap_or_else(|e| e.into_inner());
        let secs = avg * (self.queue + self.workers) as f64 / self.workers as f64;
        (secs.ceil() as u64).clamp(1, 600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_queue_refuses_at_once_and_the_rest_all_run() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let pool = Arc::new(Pool::new("test", 1, 2));
            // Jobs block until the gate opens, so that all eight are submitted while the first runs.
            let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
            let (peak, now) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let mut handles = Vec::new();
            for _ in 0..8 {
                let (pool, gate, peak, now) = (pool.clone(), gate.clone(), peak.clone(), now.clone());
                handles.push(tokio::spawn(async move {
                    pool.run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        let (open, cv) = &*gate;
                        let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                }));
            }
            let settled = || pool.busy() + pool.queue_depth() + pool.rejected.load(Ordering::SeqCst) as usize == 8;
            for _ in 0..500 {
                if settled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!((pool.busy(), pool.queue_depth(), pool.rejected.load(Ordering::SeqCst)), (1, 2, 5));
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
            let (mut done, mut refused) = (0, 0);
            for h in handles {
                match h.await.unwrap() {
                    Ok(()) => done += 1,
                    Err(PoolError::Full { retry_after }) => {
                        assert!(retry_after >= 1);
                        refused += 1
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!((done, refused), (3, 5), "one running and two waiting ran; the rest were refused");
            assert_eq!(peak.load(Ordering::SeqCst), 1, "never more jobs at once than workers");
            assert_eq!((pool.busy(), pool.queue_depth()), (0, 0));
        });
    }

    #[test]
    fn a_panicking_job_is_an_error_and_frees_its_worker() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let pool = Pool::new("test", 1, 0);
            assert!(matches!(pool.run(|| panic!("boom")).await, Err(PoolError::Panicked)));
            assert_eq!(pool.run(|| 7).await.unwrap(), 7);
        });
    }
}
