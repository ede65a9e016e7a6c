//! Decoding user images: JPEG, PNG, WebP; EXIF orientation applied; any pixel format to RGB8.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

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
/// The most pixels we decode (128 Mpx, ~400 MB as RGB8), whatever the sides: a small file can
/// claim a huge image (a decompression bomb).
pub const MAX_PIXELS: u64 = 1 << 27;
const MAX_ALLOC: u64 = 1 << 30;

/// Why an image was refused, so that a server can answer with the right status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageErrorKind {
    /// Not an image format we recognise at all.
    Unrecognised,
    /// A recognised format we do not decode (GIF, BMP, TIFF, …).
    Unsupported,
    /// Over [`MAX_SIDE`], the pixel limit or the allocation limit.
    TooLarge,
    /// A supported format that does not decode: truncated or corrupt.
    Corrupt,
}

/// The message, and what kind of refusal it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageError(pub String, pub ImageErrorKind);

impl ImageError {
    pub fn kind(&self) -> ImageErrorKind {
        self.1
    }
}

impl From<image::ImageError> for ImageError {
    fn from(e: image::ImageError) -> Self {
        let kind = match &e {
            image::ImageError::Limits(_) => ImageErrorKind::TooLarge,
            image::ImageError::Unsupported(_) => ImageErrorKind::Unsupported,
            _ => ImageErrorKind::Corrupt,
        };
        ImageError(e.to_string(), kind)
    }
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read image: {}", self.0)
    }
}

impl std::error::Error for ImageError {}

/// `[h, w]` of an encoded image as stored (before EXIF orientation), read from its header only:
/// refuses what [`decode_image_limited`] would refuse before decoding any pixel.
pub fn image_size(bytes: &[u8], max_pixels: u64) -> Result<[usize; 2], ImageError> {
    let (w, h) = reader(bytes)?.into_dimensions()?;
    check_pixels(w, h, max_pixels)?;
    Ok([h as usize, w as usize])
}

/// A reader for a supported format, with our limits.
fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let corrupt = |e: std::io::Error| ImageError(e.to_string(), ImageErrorKind::Corrupt);
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(corrupt)?;
    match reader.format() {
        None if bytes.is_empty() => return Err(ImageError("no data".into(), ImageErrorKind::Unrecognised)),
        None => {
            return Err(ImageError("unknown format (expected JPEG, PNG or WebP)".into(), ImageErrorKind::Unrecognised));
        }
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(ImageError(
                format!(
                    "{} images are not supported (expected JPEG, PNG or WebP)",
                    other.extensions_str().first().map_or_else(|| format!("{other:?}"), |e| e.to_uppercase())
                ),
                ImageErrorKind::Unsupported,
            ));
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    Ok(reader)
}

fn check_pixels(w: u32, h: u32, max_pixels: u64) -> Result<(), ImageError> {
    let n = w as u64 * h as u64;
    if n > max_pixels {
        return Err(ImageError(format!("{w}×{h} = {n} pixels is over the limit of {max_pixels} pixels"), ImageErrorKind::TooLarge));
    }
    Ok(())
}

/// Decodes an encoded image, applying its EXIF orientation.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_image_limited(bytes, MAX_PIXELS)
}

/// [`decode_image`] with a lower pixel limit (a server's).
pub fn decode_image_limited(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let mut decoder = reader(bytes)?.into_decoder()?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, max_pixels)?;
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError("empty image".into(), ImageErrorKind::Corrupt));
    }
    Ok(RgbImage { height: h as usize, width: w as usize, data: rgb.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, ImageFormat, Luma, Rgba};

    fn encode<P: image::Pixel<Subpixel = S> + image::PixelWithColorType, S: image::Primitive>(
        img: &ImageBuffer<P, Vec<S>>,
        format: ImageFormat,
    ) -> Vec<u8>
    where
        [S]: image::EncodableLayout,
    {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn gray_rgba_and_16_bit_become_rgb8() {
        let gray = ImageBuffer::from_fn(3, 2, |x, y| Luma([(x * 50 + y * 7) as u8]));
        let img = decode_image(&encode(&gray, ImageFormat::Png)).unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(&img.data[3..6], &[50, 50, 50]);

        let rgba = ImageBuffer::from_fn(2, 2, |x, _| Rgba([10 * x as u8, 20, 30, 128]));
        let img = decode_image(&encode(&rgba, ImageFormat::Png)).unwrap();
        assert_eq!(&img.data[3..6], &[10, 20, 30]);

        let deep: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(2, 1, |x, _| Luma([if x == 0 { 0 } else { 65535 }]));
        let img = decode_image(&encode(&deep, ImageFormat::Png)).unwrap();
        assert_eq!(img.data, vec![0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn webp_decodes() {
        let rgb = ImageBuffer::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
        let img = decode_image(&encode(&rgb, ImageFormat::WebP)).unwrap();
        assert_eq!((img.width, img.height), (4, 3));
        assert_eq!(img.data, rgb.into_raw(), "lossless WebP round-trips");
    }

    /// A JPEG with an EXIF APP1 segment saying "rotate 90° clockwise" (orientation 6).
    fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, _| image::Rgb([if x == 0 { 255u8 } else { 0 }, 0, 0]));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let mut tiff = b"II*\0\x08\0\0\0".to_vec(); // little-endian TIFF, first IFD at 8
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let img = decode_image(&jpeg_with_orientation(16, 8, 6)).unwrap();
        assert_eq!((img.width, img.height), (8, 16), "rotated by 90°");
        // The red first column becomes the first row after a clockwise rotation.
        assert!(img.data[(7) * 3] > 200, "top-right pixel is red");
        let plain = decode_image(&jpeg_with_orientation(16, 8, 1)).unwrap();
        assert_eq!((plain.width, plain.height), (16, 8));
    }

    #[test]
    fn junk_and_oversized_images_are_refused() {
        assert!(decode_image(b"definitely not an image").is_err());
        // A PNG header claiming 100000 × 100000 pixels.
        let mut png = encode(&ImageBuffer::from_fn(1, 1, |_, _| Luma([0u8])), ImageFormat::Png);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]); // IHDR type + data
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_image(&png).unwrap_err();
        assert!(err.0.to_lowercase().contains("limit"), "{err}");
    }

    #[test]
    fn refusals_say_what_kind_they_are() {
        use ImageErrorKind::*;
        let kind = |bytes: &[u8]| decode_image(bytes).unwrap_err().kind();
        assert_eq!(kind(b""), Unrecognised);
        assert_eq!(kind(b"definitely not an image"), Unrecognised);
        for (magic, name) in [(&b"GIF89a\x01\0\x01\0\0\0\0"[..], "GIF"), (b"BM\0\0\0\0\0\0\0\0\0\0", "BMP"), (b"II*\0\x08\0\0\0", "TIF")] {
            let err = decode_image(magic).unwrap_err();
            assert_eq!(err.kind(), Unsupported, "{name}");
            assert!(err.0.starts_with(name), "{err}");
        }
        let rgb = ImageBuffer::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 9]));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let bytes = encode(&rgb, format);
            assert_eq!(kind(&bytes[..bytes.len() / 2]), Corrupt, "truncated {format:?}");
        }
        let png = encode(&rgb, ImageFormat::Png);
        let err = decode_image_limited(&png, 40 * 30 - 1).unwrap_err();
        assert_eq!(err.kind(), TooLarge);
        assert!(err.0.contains("40×30 = 1200 pixels"), "{err}");
        assert!(decode_image_limited(&png, 40 * 30).is_ok());
        assert_eq!(image_size(&png, 40 * 30).unwrap(), [30, 40]);
        assert_eq!(image_size(&png, 40 * 30 - 1).unwrap_err().kind(), TooLarge);
    }

    #[test]
    fn a_small_file_claiming_too_many_pixels_is_refused_before_decoding() {
        // 12000 × 12000 is within MAX_SIDE but over MAX_PIXELS.
        let mut png = encode(&ImageBuffer::from_fn(1, 1, |_, _| Luma([0u8])), ImageFormat::Png);
        png[16..20].copy_from_slice(&12_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&12_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_image(&png).unwrap_err();
        assert_eq!(err.kind(), ImageErrorKind::TooLarge);
        assert!(err.0.contains("over the limit"), "{err}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
