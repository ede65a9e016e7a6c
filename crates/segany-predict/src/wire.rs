//! The embedding wire format: how an embedding travels from the server to the page and sits in
//! the server's disk cache. One encoder and one decoder for both sides (this crate also builds for
//! wasm).
//!
//! ```text
//! "SEGANYE1"            8 bytes, magic
//! L                     u32 little-endian: length of the JSON header
//! header                L bytes of UTF-8 JSON (WireHeader)
//! 0 … 7 zero bytes      so that the values start at a multiple of 8 from the start
//! values                little-endian f16 or f32, row-major in `shape`
//! ```

use serde::{Deserialize, Serialize};

use crate::predictor::{EmbeddingMeta, ImageEmbedding};

pub const MAGIC: &[u8; 8] = b"SEGANYE1";
/// The HTTP `Content-Type` of an encoded embedding.
pub const CONTENT_TYPE: &str = "application/x-segany-embedding";
/// A header longer than this is refused as malformed rather than allocated.
const MAX_HEADER: usize = 1 << 16;

/// Element type of the values on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F16,
    F32,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(Dtype::F16),
            "f32" => Ok(Dtype::F32),
            other => Err(format!("dtype '{other}' is neither f16 nor f32")),
        }
    }
}

/// The JSON header: what the embedding is valid with ([`EmbeddingMeta`]) plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireHeader {
    pub dtype: Dtype,
    /// `[1, C, 64, 64]`
    pub shape: Vec<usize>,
    pub variant: Option<String>,
    pub encoder_digest: String,
    /// `[h, w]` after the longest-side resize.
    pub input_size: [usize; 2],
    /// `[h, w]` of the original image.
    pub original_size: [usize; 2],
    /// SHA-256 (hex) of the encoded image bytes the embedding was computed from.
    pub image_sha256: String,
    /// The server's id of the model that made it.
    pub model: String,
}

impl WireHeader {
    pub fn new(meta: &EmbeddingMeta, shape: &[usize], dtype: Dtype, image_sha256: &str, model: &str) -> Self {
        Self {
            dtype,
            shape: shape.to_vec(),
            variant: meta.variant.clone(),
            encoder_digest: meta.encoder_digest.clone(),
            input_size: meta.input_size,
            original_size: meta.original_size,
            image_sha256: image_sha256.to_string(),
            model: model.to_string(),
        }
    }

    pub fn meta(&self) -> EmbeddingMeta {
        EmbeddingMeta {
            variant: self.variant.clone(),
            encoder_digest: self.encoder_digest.clone(),
            input_size: self.input_size,
            original_size: self.original_size,
        }
    }

    /// The header as one line of JSON (also sent as the `X-Segany-Meta` HTTP header).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("header serialises")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad embedding data: {}", self.0)
    }
}

impl std::error::Error for WireError {}

fn data_offset(header_len: usize) -> usize {
    (12 + header_len).div_ceil(8) * 8
}

/// Serialises values (f32, converted to `header.dtype`) after the header.
pub fn encode(header: &WireHeader, values: &[f32]) -> Vec<u8> {
    assert_eq!(values.len(), header.shape.iter().product::<usize>(), "values do not match the header's shape");
    let json = header.to_json();
    let offset = data_offset(json.len());
    let mut out = Vec::with_capacity(offset + values.len() * header.dtype.size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out.resize(offset, 0);
    match header.dtype {
        Dtype::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::F16 => values.iter().for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
    }
    out
}

/// Encodes an embedding computed from the image with SHA-256 `image_sha256` by model `model`.
pub fn encode_embedding(embedding: &ImageEmbedding, dtype: Dtype, image_sha256: &str, model: &str) -> Vec<u8> {
    let header = WireHeader::new(&embedding.meta, &embedding.dims(), dtype, image_sha256, model);
    encode(&header, &embedding.to_vec())
}

/// Parses the header and the values (as f32, whatever the dtype on the wire).
pub fn decode(bytes: &[u8]) -> Result<(WireHeader, Vec<f32>), WireError> {
    let err = |m: String| WireError(m);
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(err("missing the SEGANYE1 magic".into()));
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if len > MAX_HEADER || 12 + len > bytes.len() {
        return Err(err(format!("header length {len} does not fit in {} bytes", bytes.len())));
    }
    let header: WireHeader =
        serde_json::from_slice(&bytes[12..12 + len]).map_err(|e| err(format!("bad JSON header: {e}")))?;
    let offset = data_offset(len);
    let n = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err(format!("shape {:?} overflows", header.shape)))?;
    let data = bytes.get(offset..).unwrap_or_default();
    if Some(data.len()) != n.checked_mul(header.dtype.size()) {
        return Err(err(format!(
            "{} value bytes for shape {:?} in {}",
            data.len(),
            header.shape,
            header.dtype.name()
        )));
    }
    let values = match header.dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    };
    Ok((header, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dtype: Dtype, shape: &[usize]) -> WireHeader {
        WireHeader {
            dtype,
            shape: shape.to_vec(),
            variant: Some("vit_t".into()),
            encoder_digest: "ab".repeat(32),
            input_size: [768, 1024],
            original_size: [600, 800],
            image_sha256: "cd".repeat(32),
            model: "vit_t".into(),
        }
    }

    #[test]
    fn layout_is_magic_length_json_padding_values() {
        let h = header(Dtype::F32, &[1, 2, 1, 1]);
        let bytes = encode(&h, &[1.5, -2.0]);
        let json = h.to_json();
        assert_eq!(&bytes[..8], b"SEGANYE1");
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, json.len());
        assert_eq!(&bytes[12..12 + json.len()], json.as_bytes());
        let offset = bytes.len() - 8;
        assert_eq!(offset % 8, 0, "values start on an 8-byte boundary");
        assert!(offset - (12 + json.len()) < 8 && bytes[12 + json.len()..offset].iter().all(|&b| b == 0));
        assert_eq!(&bytes[offset..], &[0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0]);
        assert!(json.starts_with(r#"{"dtype":"f32","shape":[1,2,1,1],"variant":"vit_t","encoder_digest":"#));
    }

    #[test]
    fn f32_round_trips_exactly_and_f16_within_half_precision() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.7) * 0.37).collect();
        let (h32, v32) = decode(&encode(&header(Dtype::F32, &[1, 4, 4, 4]), &values)).unwrap();
        assert_eq!(v32, values);
        assert_eq!(h32, header(Dtype::F32, &[1, 4, 4, 4]));
        let (h16, v16) = decode(&encode(&header(Dtype::F16, &[1, 4, 4, 4]), &values)).unwrap();
        assert_eq!(h16.dtype, Dtype::F16);
        for (a, b) in v16.iter().zip(&values) {
            assert!((a - b).abs() <= b.abs() * 2f32.powi(-11), "{a} vs {b}");
        }
        assert_eq!(h16.meta().original_size, [600, 800]);
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let good = encode(&header(Dtype::F16, &[1, 2, 2, 2]), &[0.0; 8]);
        assert!(decode(b"").is_err());
        assert!(decode(b"SEGANYE2\0\0\0\0").unwrap_err().0.contains("magic"));
        assert!(decode(&good[..good.len() - 1]).unwrap_err().0.contains("value bytes"));
        assert!(decode(&good[..20]).unwrap_err().0.contains("header length"));
        let mut bad_json = good.clone();
        bad_json[12] = b'[';
        assert!(decode(&bad_json).unwrap_err().0.contains("JSON"));
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        let overflow = encode_raw_header(r#"{"dtype":"f32","shape":[4294967296,4294967296,4294967296],"variant":null,"encoder_digest":"","input_size":[1,1],"original_size":[1,1],"image_sha256":"","model":""}"#);
        assert!(decode(&overflow).unwrap_err().0.contains("overflows"));
    }

    fn encode_raw_header(json: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out.resize(data_offset(json.len()), 0);
        out
    }
}
