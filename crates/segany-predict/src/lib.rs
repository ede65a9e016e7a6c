//! Image geometry, the [`Predictor`] and mask utilities for segany.

pub mod everything;
pub mod geometry;
pub mod image_io;
pub mod masks;
pub mod npy;
pub mod polygons;
pub mod predictor;
pub mod wire;

pub use image_io::{ImageError, ImageErrorKind, RgbImage, decode_image, decode_image_limited, image_size};
pub use everything::{EverythingSettings, GeneratedMask};
pub use predictor::{BatchPrediction, EmbeddingMeta, ImageEmbedding, Point, PredictError, Prediction, Predictor, Prompt, ShardMasks};
