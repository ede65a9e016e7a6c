//! Embedding caches, keyed by model id and the SHA-256 of the image bytes: a bounded in-memory LRU
//! (f32 values), and an optional directory of wire-format files that survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use segany_predict::EmbeddingMeta;
use segany_predict::wire::{self, Dtype, WireHeader};

use crate::models::Model;

/// `(model id, image SHA-256 hex)`
pub type Key = (String, String);

/// A computed embedding, as the caches hold it.
#[derive(Debug)]
pub struct Embedding {
    /// Row-major `[1, C, 64, 64]`.
    pub values: Vec<f32>,
    pub shape: [usize; 4],
    pub meta: EmbeddingMeta,
}

impl Embedding {
    fn bytes(&self) -> usize {
        self.values.len() * size_of::<f32>() + 256
    }

    pub fn header(&self, dtype: Dtype, image_sha256: &str, model: &str) -> WireHeader {
        WireHeader::new(&self.meta, &self.shape, dtype, image_sha256, model)
    }

    pub fn encode(&self, dtype: Dtype, image_sha256: &str, model: &str) -> Vec<u8> {
        wire::encode(&self.header(dtype, image_sha256, model), &self.values)
    }
}

/// Least-recently-used embeddings up to a byte budget.
pub struct MemoryCache {
    max_bytes: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<Key, (Arc<Embedding>, u64)>,
    /// tick of last use → key; the first is the next to go.
    order: BTreeMap<u64, Key>,
}

impl MemoryCache {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, bytes: 0, tick: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    pub fn get(&mut self, key: &Key) -> Option<Arc<Embedding>> {
        self.tick += 1;
        let (emb, last) = self.entries.get_mut(key)?;
        self.order.remove(last);
        *last = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(emb.clone())
    }

    /// Stores an embedding, evicting the least recently used ones beyond the budget. One larger than
    /// the whole budget is not kept.
    pub fn insert(&mut self, key: Key, emb: Arc<Embedding>) {
        if emb.bytes() > self.max_bytes {
            return;
        }
        self.remove(&key);
        self.tick += 1;
        self.bytes += emb.bytes();
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (emb, self.tick));
        while self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((e, _)) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes();
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some((e, tick)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.bytes -= e.bytes();
        }
    }

    /// `(entries, bytes)`
    pub fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }
}

/// What a disk-cache lookup found.
pub enum DiskRead {
    Absent,
    Hit(Embedding),
    /// A file that is not a valid embedding for this model and image (truncated, foreign, garbage):
    /// ignored and overwritten by the recomputed one.
    Unusable(String),
}

/// `DIR/<model id>/<image sha256>.segemb`, each file in the wire format with f32 values.
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, model: &str, sha: &str) -> PathBuf {
        self.dir.join(model).join(format!("{sha}.segemb"))
    }

    pub fn read(&self, model: &Model, sha: &str) -> DiskRead {
        let path = self.path(&model.id, sha);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DiskRead::Absent,
            Err(e) => return DiskRead::Unusable(format!("{}: {e}", path.display())),
        };
        let unusable = |why: String| DiskRead::Unusable(format!("{}: {why}", path.display()));
        let (header, values) = match wire::decode(&bytes) {
            Ok(d) => d,
            Err(e) => return unusable(e.to_string()),
        };
        if header.image_sha256 != sha || header.dtype != Dtype::F32 || header.shape != model.embedding_shape {
            return unusable(format!("made for another image, dtype or shape ({})", header.to_json()));
        }
        let meta = header.meta();
        if let Err(e) = model.predictor.check_embedding(&meta, values.len()) {
            return unusable(e.to_string());
        }
        DiskRead::Hit(Embedding { values, shape: model.embedding_shape, meta })
    }

    /// Writes through a temporary file and a rename, so that a reader (or a crash) never sees half
    /// a file.
    pub fn write(&self, model: &str, sha: &str, emb: &Embedding) -> std::io::Result<()> {
        let path = self.path(model, sha);
        let dir = path.parent().expect("cache files live in a directory");
        std::fs::create_dir_all(dir)?;
        let tmp = temp_name(dir, sha);
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&emb.encode(Dtype::F32, sha, model))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn temp_name(dir: &Path, sha: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(".{sha}.{}-{}.tmp", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(n: usize) -> Arc<Embedding> {
        Arc::new(Embedding {
            values: vec![0.5; n],
            shape: [1, n, 1, 1],
            meta: EmbeddingMeta { variant: None, encoder_digest: "d".into(), input_size: [4, 4], original_size: [4, 4] },
        })
    }

    fn key(s: &str) -> Key {
        ("m".into(), s.into())
    }

    #[test]
    fn lru_evicts_the_least_recently_used_beyond_the_budget() {
        let one = emb(100).bytes();
        let mut c = MemoryCache::new(3 * one);
        c.insert(key("a"), emb(100));
        c.insert(key("b"), emb(100));
        c.insert(key("c"), emb(100));
        assert!(c.get(&key("a")).is_some(), "a is now the most recent");
        c.insert(key("d"), emb(100));
        assert!(c.get(&key("b")).is_none(), "b was the least recently used");
        assert!(c.get(&key("a")).is_some() && c.get(&key("c")).is_some() && c.get(&key("d")).is_some());
        assert_eq!(c.usage(), (3, 3 * one));
        c.insert(key("a"), emb(100));
        assert_eq!(c.usage(), (3, 3 * one), "replacing an entry does not count it twice");
        c.insert(key("huge"), emb(10_000));
        assert!(c.get(&key("huge")).is_none(), "larger than the budget: not kept");
        assert_eq!(c.usage().0, 3);
    }
}
