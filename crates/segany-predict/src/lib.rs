//! Image geometry, the [`Predictor`] and mask utilities for segany.

pub mod geometry;
pub mod image_io;
pub mod npy;
pub mod predictor;

pub use image_io::{RgbImage, decode_image};
pub use predictor::{EmbeddingMeta, ImageEmbedding, Point, PredictError, Prediction, Predictor, Prompt};
