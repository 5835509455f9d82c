//! One error type for the whole core. Every variant maps to one stable string
//! `code` that the JS binding puts on the thrown `Error` (see API.md, Errors).

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a core call can fail. The binding turns each into a JS error
/// whose `code` is [`Error::code`]; `Type` and `Range` become `TypeError` and
/// `RangeError`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument that is neither a type nor a range problem.
    #[error("{0}")]
    Arg(String),
    /// The JS type of an argument is wrong (thrown as `TypeError`).
    #[error("{0}")]
    Type(String),
    /// A number or size is out of range (thrown as `RangeError`).
    #[error("{0}")]
    Range(String),
    /// Unknown table or column, or a replicated table missing what it needs.
    #[error("{0}")]
    Schema(String),
    /// A malformed, truncated or oversize frame.
    #[error("{0}")]
    Frame(String),
    /// A frame whose HMAC tag is missing or wrong.
    #[error("{0}")]
    Auth(String),
    /// A frame stamped too far ahead of the local clock.
    #[error("{0}")]
    Drift(String),
    /// A frame from an unknown protocol version.
    #[error("{0}")]
    Version(String),
    /// A writing statement given to a read-only call.
    #[error("{0}")]
    ReadOnly(String),
    /// Snapshot or restore failed (store, checksum, format).
    #[error("{0}")]
    Snapshot(String),
    /// A range that peers no longer hold (purged); a snapshot is needed.
    #[error("{0}")]
    Gone(String),
    /// The replicator was closed.
    #[error("the replicator is closed")]
    Closed,
    /// SQLite itself failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Error {
    /// The stable string code of this error, as documented in API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Arg(_) | Error::Type(_) | Error::Range(_) => "E_ARG",
            Error::Schema(_) => "E_SCHEMA",
            Error::Frame(_) => "E_FRAME",
            Error::Auth(_) => "E_AUTH",
            Error::Drift(_) => "E_DRIFT",
            Error::Version(_) => "E_VERSION",
            Error::ReadOnly(_) => "E_READONLY",
            Error::Snapshot(_) => "E_SNAPSHOT",
            Error::Gone(_) => "E_GONE",
            Error::Closed => "E_CLOSED",
            Error::Sqlite(_) => "E_SQLITE",
        }
    }
}

/// Shorthand constructors, so call sites stay one line.
pub fn schema_err(msg: impl Into<String>) -> Error {
    Error::Schema(msg.into())
}

/// A malformed frame.
pub fn frame_err(msg: impl Into<String>) -> Error {
    Error::Frame(msg.into())
}
