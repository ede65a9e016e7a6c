use std::fmt;

/// Why a checkpoint could not be loaded. Every variant names what is wrong in the user's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsError {
    Io { path: String, message: String },
    /// Unreadable, truncated, or not a checkpoint at all.
    Format { source: String, message: String },
    /// A readable checkpoint that is not Segment Anything.
    NotSam { reason: String },
    UnknownVariant { reason: String },
    VariantMismatch { requested: String, found: String },
    /// `unexpected` is a key the checkpoint has instead, if any (a renamed key).
    MissingKey { key: String, unexpected: Option<String> },
    UnexpectedKey { key: String },
    ShapeMismatch { key: String, expected: Vec<usize>, found: Vec<usize> },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, message } => write!(f, "cannot read checkpoint {path}: {message}"),
            Self::Format { source, message } => write!(f, "cannot read checkpoint {source}: {message}"),
            Self::NotSam { reason } => write!(f, "not a Segment Anything checkpoint: {reason}"),
            Self::UnknownVariant { reason } => write!(f, "unknown SAM variant: {reason}"),
            Self::VariantMismatch { requested, found } => {
                write!(f, "--model {requested} was requested but the checkpoint is {found}")
            }
            Self::MissingKey { key, unexpected: None } => write!(f, "checkpoint is missing key '{key}'"),
            Self::MissingKey { key, unexpected: Some(other) } => {
                write!(f, "checkpoint is missing key '{key}' and has unexpected key '{other}'")
            }
            Self::UnexpectedKey { key } => write!(f, "checkpoint has unexpected key '{key}'"),
            Self::ShapeMismatch { key, expected, found } => {
                write!(f, "checkpoint key '{key}' has shape {found:?}, expected {expected:?}")
            }
        }
    }
}

impl std::error::Error for WeightsError {}
