//! The server's shared state, and how an embedding is found or made: memory cache, then a
//! computation already in flight for the same image (joined, not repeated), then the disk cache,
//! then the encoder pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use segany_predict::decode_image_limited;
use tokio::sync::watch;

use crate::cache::{DiskCache, DiskRead, Embedding, Key, MemoryCache};
use crate::error::ApiError;
use crate::metrics::{CacheResult, Metrics};
use crate::models::Model;
use crate::pool::{Pool, PoolError};
use crate::static_files::StaticFile;

pub type Found = (Arc<Embedding>, CacheResult);
type Outcome = Result<Found, ApiError>;

pub struct AppState {
    pub models: Vec<Arc<Model>>,
    pub encoder_pool: Pool,
    pub decoder_pool: Pool,
    pub metrics: Metrics,
    pub memory: Mutex<MemoryCache>,
    pub disk: Option<Arc<DiskCache>>,
    /// Embeddings being computed, by key: later requests for the same image wait for the result.
    inflight: Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
    pub max_body_bytes: usize,
    pub max_pixels: u64,
    pub static_files: &'static [StaticFile],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        models: Vec<Model>,
        encoder_pool: Pool,
        decoder_pool: Pool,
        memory_bytes: usize,
        disk: Option<DiskCache>,
        max_body_bytes: usize,
        max_pixels: u64,
        static_files: &'static [StaticFile],
    ) -> Self {
        Self {
            models: models.into_iter().map(Arc::new).collect(),
            encoder_pool,
            decoder_pool,
            metrics: Metrics::default(),
            memory: Mutex::new(MemoryCache::new(memory_bytes)),
            disk: disk.map(Arc::new),
            inflight: Mutex::new(HashMap::new()),
            max_body_bytes,
            max_pixels,
            static_files,
        }
    }

    /// The model named in a request, or the default (the first loaded) when none is named.
    pub fn model(&self, id: Option<&str>, field: &str) -> Result<Arc<Model>, ApiError> {
        match id {
            Some(id) => self.models.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
                ApiError::not_found(format!("unknown model '{id}' (this server has: {})", known.join(", "))).field(field)
            }),
            None => self.models.first().cloned().ok_or_else(|| ApiError::not_found("this server has no models loaded").field(field)),
        }
    }

    pub fn memory_usage(&self) -> (usize, usize) {
        lock(&self.memory).usage()
    }

    /// The embedding of `image` (SHA-256 `sha`) by `model`, from a cache or computed.
    pub async fn embedding(self: &Arc<Self>, model: Arc<Model>, sha: String, image: axum::body::Bytes) -> Outcome {
        let key: Key = (model.id.clone(), sha.clone());
        if let Some(found) = self.in_memory(&key) {
            return Ok(found);
        }
        let (mut rx, leader) = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some(rx) => (rx.clone(), false),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.clone(), rx.clone());
                    // The computation runs in its own task: it finishes and fills the caches even
                    // if this client goes away.
                    let state = self.clone();
                    tokio::spawn(async move {
                        let outcome = state.find_or_compute(&model, &sha, image).await;
                        let _ = tx.send(Some(outcome));
                        lock(&state.inflight).remove(&key);
                    });
                    (rx, true)
                }
            }
        };
        let outcome = wait(&mut rx).await;
        match outcome {
            Ok((emb, CacheResult::Miss)) if !leader => {
                self.metrics.cache(CacheResult::Coalesced);
                Ok((emb, CacheResult::Coalesced))
            }
            other => other,
        }
    }

    /// An embedding already made (memory, in flight, or on disk); `None` when the image was never
    /// embedded by this model (or has been evicted).
    pub async fn cached_embedding(&self, model: &Arc<Model>, sha: &str) -> Result<Option<Found>, ApiError> {
        let key: Key = (model.id.clone(), sha.to_string());
        if let Some(found) = self.in_memory(&key) {
            return Ok(Some(found));
        }
        let pending = lock(&self.inflight).get(&key).cloned();
        if let Some(mut rx) = pending {
            return wait(&mut rx).await.map(Some);
        }
        self.on_disk(model, sha).await.map(|emb| emb.map(|e| (e, CacheResult::DiskHit)))
    }

    fn in_memory(&self, key: &Key) -> Option<Found> {
        let emb = lock(&self.memory).get(key)?;
        self.metrics.cache(CacheResult::MemoryHit);
        Some((emb, CacheResult::MemoryHit))
    }

    async fn on_disk(&self, model: &Arc<Model>, sha: &str) -> Result<Option<Arc<Embedding>>, ApiError> {
        let Some(disk) = &self.disk else { return Ok(None) };
        let read = {
            let (model, sha) = (model.clone(), sha.to_string());
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || disk.read(&model, &sha))
                .await
                .map_err(|_| ApiError::internal("reading the disk cache failed"))?
        };
        match read {
            DiskRead::Absent => Ok(None),
            DiskRead::Unusable(why) => {
                eprintln!("segany: ignoring unusable cache file {why}");
                self.metrics.disk_cache_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(None)
            }
            DiskRead::Hit(emb) => {
                let emb = Arc::new(emb);
                lock(&self.memory).insert((model.id.clone(), sha.to_string()), emb.clone());
                self.metrics.cache(CacheResult::DiskHit);
                Ok(Some(emb))
            }
        }
    }

    async fn find_or_compute(&self, model: &Arc<Model>, sha: &str, image: axum::body::Bytes) -> Outcome {
        if let Some(emb) = self.on_disk(model, sha).await? {
            return Ok((emb, CacheResult::DiskHit));
        }
        let max_pixels = self.max_pixels;
        let m = model.clone();
        let job = move || -> Result<Embedding, ApiError> {
            let img = decode_image_limited(&image, max_pixels).map_err(|e| ApiError::image(e, None))?;
            let emb = m.predictor.embed(&img).map_err(ApiError::predict)?;
            Ok(Embedding { values: emb.to_vec(), shape: emb.dims(), meta: emb.meta })
        };
        let emb = match self.encoder_pool.run(job).await {
            Ok(result) => Arc::new(result?),
            Err(PoolError::Full { retry_after }) => return Err(ApiError::busy("encoder", retry_after)),
            Err(PoolError::Panicked) => return Err(ApiError::internal("the image encoder failed")),
        };
        self.metrics.cache(CacheResult::Miss);
        lock(&self.memory).insert((model.id.clone(), sha.to_string()), emb.clone());
        if let Some(disk) = &self.disk {
            let disk = disk.clone();
            let (id, sha, e) = (model.id.clone(), sha.to_string(), emb.clone());
            let written = tokio::task::spawn_blocking(move || disk.write(&id, &sha, &e)).await;
            if !matches!(written, Ok(Ok(()))) {
                eprintln!("segany: cannot write to the disk cache: {written:?}");
                self.metrics.disk_cache_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok((emb, CacheResult::Miss))
    }
}

/// The outcome a computation in flight publishes.
async fn wait(rx: &mut watch::Receiver<Option<Outcome>>) -> Outcome {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().expect("waited for a value"),
        Err(_) => Err(ApiError::internal("the embedding computation was abandoned")),
    }
}
