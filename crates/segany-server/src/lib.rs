//! `segany serve`: image embeddings and predictions over HTTP, for the browser page (which runs the
//! decoder itself and needs embeddings and decoder weights) and for clients without wasm.
//!
//! Heavy work never runs on the async runtime: encoder and decoder jobs go to bounded [`pool`]s
//! that answer 503 when full. Embeddings are cached by image content (memory LRU, optional
//! directory). Routes and formats: see [`api`] and the README's "HTTP API".

pub mod api;
mod cache;
mod error;
mod metrics;
mod models;
mod pool;
mod state;
mod static_files;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use burn::tensor::Device;

pub use error::ApiError;
pub use models::ModelSpec;
pub use static_files::{PLACEHOLDER_PAGE, StaticFile};

/// How long in-flight requests may take to finish after SIGINT/SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Everything `segany serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub models: Vec<ModelSpec>,
    pub addr: SocketAddr,
    /// Directory of cached embeddings that survives a restart.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of embeddings kept in memory.
    pub memory_cache_bytes: usize,
    /// Encoder jobs run at once (and, separately, decoder jobs).
    pub workers: usize,
    /// Jobs that may wait for a worker before requests get 503.
    pub queue: usize,
    pub max_body_bytes: usize,
    pub max_pixels: u64,
    pub static_files: &'static [StaticFile],
}

impl ServerConfig {
    /// The defaults of `segany serve`.
    pub fn new(models: Vec<ModelSpec>) -> Self {
        Self {
            models,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cache_dir: None,
            memory_cache_bytes: 256 << 20,
            workers: 1,
            queue: 4,
            max_body_bytes: 32 << 20,
            max_pixels: segany_predict::image_io::MAX_PIXELS,
            static_files: PLACEHOLDER_PAGE,
        }
    }
}

/// Loads the models, listens, prints `segany listening on http://ADDR` and serves until SIGINT or
/// SIGTERM; then stops accepting and lets in-flight requests finish (up to [`SHUTDOWN_GRACE`]).
pub fn serve(config: ServerConfig) -> Result<()> {
    let device = Device::flex();
    let models = models::load_all(&config.models, &device)?;
    if models.is_empty() {
        eprintln!("segany: no --checkpoint given: serving the page only");
    }
    for m in &models {
        let short = m.encoder_digest.get(..12).unwrap_or(&m.encoder_digest);
        eprintln!("segany: model '{}' from {} (encoder {short})", m.id, m.checkpoint.display());
    }
    let disk = match &config.cache_dir {
        Some(dir) => Some(cache::DiskCache::new(dir.clone()).with_context(|| format!("cannot create cache directory {}", dir.display()))?),
        None => None,
    };
    let state = Arc::new(state::AppState::new(
        models,
        pool::Pool::new("encoder", config.workers, config.queue),
        pool::Pool::new("decoder", config.workers, config.queue),
        config.memory_cache_bytes,
        disk,
        config.max_body_bytes,
        config.max_pixels,
        config.static_files,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let result = runtime.block_on(run(state, config.addr));
    // Blocking jobs still running after the grace period are abandoned rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(state: Arc<state::AppState>, addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    println!("segany listening on http://{local}");
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        eprintln!("segany: shutting down: no new connections, finishing requests in flight");
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        served = server => served.context("server error")?,
        _ = async { if stopping_rx.await.is_ok() { tokio::time::sleep(SHUTDOWN_GRACE).await } else { std::future::pending().await } } => {
            eprintln!("segany: requests still in flight after {} s; exiting", SHUTDOWN_GRACE.as_secs());
        }
    }
    eprintln!("segany: stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
