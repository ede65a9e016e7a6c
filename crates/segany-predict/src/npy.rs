//! Minimal `.npy` (format 1.0) reading and writing for little-endian f32 and u8 arrays: the
//! CLI's outputs and the reference fixtures.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct NpyError(pub String);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad .npy data: {}", self.0)
    }
}

impl std::error::Error for NpyError {}

/// An element type we read and write.
pub trait NpyElement: Copy + Sized {
    const DESCR: &'static str;
    fn from_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for u8 {
    const DESCR: &'static str = "|u1";
    fn from_le(b: &[u8]) -> Self {
        b[0]
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

/// Serialises a C-ordered array.
pub fn to_npy<T: NpyElement>(data: &[T], shape: &[usize]) -> Vec<u8> {
    assert_eq!(data.len(), shape.iter().product::<usize>(), "data does not match shape");
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}", T::DESCR);
    // Pad so that the data starts on a 64-byte boundary, header ending in '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * size_of::<T>());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        v.write_le(&mut out);
    }
    out
}

/// Parses an array of element type `T`; returns the values and the shape.
pub fn from_npy<T: NpyElement>(bytes: &[u8]) -> Result<(Vec<T>, Vec<usize>), NpyError> {
    let err = |m: &str| NpyError(m.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("missing the NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(NpyError(format!("unsupported version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| err("truncated header"))?;
    let field = |name: &str| -> Result<&str, NpyError> {
        let at = header.find(&format!("'{name}':")).ok_or_else(|| NpyError(format!("no '{name}' in header")))?;
        Ok(header[at + name.len() + 3..].trim_start())
    };
    let descr = field("descr")?;
    if !descr.starts_with(&format!("'{}'", T::DESCR)) {
        return Err(NpyError(format!("element type {} expected, header is {header}", T::DESCR)));
    }
    if !field("fortran_order")?.starts_with("False") {
        return Err(err("Fortran order is not supported"));
    }
    let shape_str = field("shape")?;
    let close = shape_str.find(')').ok_or_else(|| err("bad shape"))?;
    let shape: Vec<usize> = shape_str[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| NpyError(format!("bad dimension '{s}'"))))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    let size = size_of::<T>();
    if data.len() != n * size {
        return Err(NpyError(format!("{} data bytes for shape {shape:?}", data.len())));
    }
    Ok((data.chunks_exact(size).map(T::from_le).collect(), shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_and_u8_round_trip() {
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = to_npy(&v, &[2, 3, 4]);
        assert_eq!((bytes.len() - v.len() * 4) % 64, 0);
        assert_eq!(from_npy::<f32>(&bytes).unwrap(), (v, vec![2, 3, 4]));
        let u = vec![0u8, 1, 255];
        assert_eq!(from_npy::<u8>(&to_npy(&u, &[3])).unwrap(), (u, vec![3]));
    }

    #[test]
    fn wrong_type_or_truncation_is_an_error() {
        let bytes = to_npy(&[1.0f32, 2.0], &[2]);
        assert!(from_npy::<u8>(&bytes).is_err());
        assert!(from_npy::<f32>(&bytes[..bytes.len() - 1]).is_err());
        assert!(from_npy::<f32>(b"not numpy").is_err());
    }
}
