//! Decoding user images: JPEG, PNG, WebP; EXIF orientation applied; any pixel format to RGB8.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// An 8-bit RGB image, row-major `h × w × 3`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// The largest side we accept; SAM sees 1024 pixels anyway, and this keeps a hostile file from
/// asking for gigabytes.
pub const MAX_SIDE: u32 = 16_384;
const MAX_ALLOC: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read image: {}", self.0)
    }
}

impl std::error::Error for ImageError {}

/// Decodes an encoded image, applying its EXIF orientation.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageError("unknown format (expected JPEG, PNG or WebP)".into()));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| ImageError(e.to_string()))?;
    let orientation = decoder.orientation().map_err(|e| ImageError(e.to_string()))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| ImageError(e.to_string()))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError("empty image".into()));
    }
    Ok(RgbImage { height: h as usize, width: w as usize, data: rgb.into_raw() })
}
