//! Counters for `/metrics`, written as Prometheus text by hand (a few counters and histograms do not
//! need a metrics framework).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pool::Pool;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 14] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Where an embedding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    MemoryHit,
    DiskHit,
    /// Computed by the encoder.
    Miss,
    /// Joined a computation another request had started.
    Coalesced,
}

impl CacheResult {
    const ALL: [CacheResult; 4] = [Self::MemoryHit, Self::DiskHit, Self::Miss, Self::Coalesced];

    fn label(self) -> &'static str {
        match self {
            Self::MemoryHit => "memory_hit",
            Self::DiskHit => "disk_hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }

    /// `X-Segany-Cache`: a hit when no encoder ran for this request.
    pub fn header(self) -> &'static str {
        match self {
            Self::MemoryHit | Self::DiskHit => "hit",
            Self::Miss | Self::Coalesced => "miss",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) → count
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route → latency
    latency: Mutex<BTreeMap<String, Histogram>>,
    in_flight: AtomicU64,
    cache: [AtomicU64; 4],
    /// Disk-cache files that could not be read back (ignored and recomputed) or written.
    pub disk_cache_errors: AtomicU64,
}

/// Marks a request in flight until dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests).entry((route.to_string(), method.to_string(), status)).or_default() += 1;
        let mut latency = lock(&self.latency);
        let h = latency.entry(route.to_string()).or_default();
        let s = elapsed.as_secs_f64();
        for (count, le) in h.counts.iter_mut().zip(BUCKETS) {
            *count += (s <= le) as u64;
        }
        h.count += 1;
        h.sum += s;
    }

    pub fn cache(&self, result: CacheResult) {
        let i = CacheResult::ALL.iter().position(|&r| r == result).expect("listed");
        self.cache[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, pools: &[&Pool], memory: (usize, usize)) -> String {
        let mut out = String::new();
        let w = &mut out;
        header(w, "segany_requests_total", "counter", "HTTP requests by route, method and status.");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(w, "segany_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}");
        }
        header(w, "segany_request_duration_seconds", "histogram", "Time to the response head, by route.");
        for (route, h) in lock(&self.latency).iter() {
            for (count, le) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(w, "segany_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {count}");
            }
            let _ = writeln!(w, "segany_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(w, "segany_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(w, "segany_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        header(w, "segany_requests_in_flight", "gauge", "Requests being handled.");
        let _ = writeln!(w, "segany_requests_in_flight {}", self.in_flight.load(Ordering::SeqCst));
        header(w, "segany_embedding_cache_total", "counter", "Embedding lookups: memory_hit, disk_hit, miss (computed), coalesced (joined a computation in flight).");
        for (r, n) in CacheResult::ALL.iter().zip(&self.cache) {
            let _ = writeln!(w, "segany_embedding_cache_total{{result=\"{}\"}} {}", r.label(), n.load(Ordering::Relaxed));
        }
        header(w, "segany_disk_cache_errors_total", "counter", "Disk-cache files ignored as unreadable or not written.");
        let _ = writeln!(w, "segany_disk_cache_errors_total {}", self.disk_cache_errors.load(Ordering::Relaxed));
        header(w, "segany_memory_cache_entries", "gauge", "Embeddings held in memory.");
        let _ = writeln!(w, "segany_memory_cache_entries {}", memory.0);
        header(w, "segany_memory_cache_bytes", "gauge", "Bytes of embeddings held in memory.");
        let _ = writeln!(w, "segany_memory_cache_bytes {}", memory.1);
        header(w, "segany_queue_depth", "gauge", "Jobs waiting for a worker, by pool.");
        for p in pools {
            let _ = writeln!(w, "segany_queue_depth{{pool=\"{}\"}} {}", p.name, p.queue_depth());
        }
        header(w, "segany_workers_busy", "gauge", "Workers running a job, by pool.");
        for p in pools {
            let _ = writeln!(w, "segany_workers_busy{{pool=\"{}\"}} {}", p.name, p.busy());
        }
        header(w, "segany_workers", "gauge", "Workers, by pool.");
        for p in pools {
            let _ = writeln!(w, "segany_workers{{pool=\"{}\"}} {}", p.name, p.workers);
        }
        header(w, "segany_rejected_total", "counter", "Jobs refused with 503 because the pool's queue was full.");
        for p in pools {
            let _ = writeln!(w, "segany_rejected_total{{pool=\"{}\"}} {}", p.name, p.rejected.load(Ordering::Relaxed));
        }
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counters_labelled() {
        let m = Metrics::default();
        m.record("/healthz", "GET", 200, Duration::from_millis(3));
        m.record("/healthz", "GET", 200, Duration::from_millis(200));
        m.record("/healthz", "GET", 404, Duration::from_secs(100));
        m.cache(CacheResult::DiskHit);
        let text = m.render(&[&Pool::new("encoder", 2, 3)], (1, 4096));
        for line in [
            r#"segany_requests_total{route="/healthz",method="GET",status="200"} 2"#,
            r#"segany_requests_total{route="/healthz",method="GET",status="404"} 1"#,
            r#"segany_request_duration_seconds_bucket{route="/healthz",le="0.001"} 0"#,
            r#"segany_request_duration_seconds_bucket{route="/healthz",le="0.005"} 1"#,
            r#"segany_request_duration_seconds_bucket{route="/healthz",le="0.25"} 2"#,
            r#"segany_request_duration_seconds_bucket{route="/healthz",le="60"} 2"#,
            r#"segany_request_duration_seconds_bucket{route="/healthz",le="+Inf"} 3"#,
            r#"segany_request_duration_seconds_count{route="/healthz"} 3"#,
            r#"segany_embedding_cache_total{result="disk_hit"} 1"#,
            r#"segany_embedding_cache_total{result="miss"} 0"#,
            r#"segany_workers{pool="encoder"} 2"#,
            r#"segany_queue_depth{pool="encoder"} 0"#,
            "segany_memory_cache_bytes 4096",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
