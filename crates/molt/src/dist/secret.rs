//! [`Secret`]: what nodes share to let each other in (Erlang's cookie).
//! It is read from a file or an environment variable, and never printed,
//! logged or sent: the handshake proves knowing it with an HMAC.

use std::path::Path;
use std::sync::Arc;

/// The shared secret of a group of nodes. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// Why a secret could not be had.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty.
    #[error("the secret is empty: give every node of the group the same non-empty secret")]
    Empty,
    /// The file could not be read.
    #[error("could not read the secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The file can be read by other users (Erlang refuses such a cookie
    /// file too).
    #[error("the secret file {path} can be read by other users: make it private with `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: String,
    },
    /// The environment variable is not set (or not valid UTF-8).
    #[error("the environment variable {0} that should hold the secret is not set")]
    NoVariable(String),
}

impl Secret {
    /// A secret from its bytes.
    ///
    /// # Errors
    /// When `bytes` is empty.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Secret, SecretError> {
        let bytes = bytes.as_ref();
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(bytes.into()))
    }

    /// The secret in a file, without a trailing newline; the file must be
    /// readable by its owner only.
    ///
    /// # Errors
    /// When the file cannot be read, others may read it, or it is empty.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Secret, SecretError> {
        let path = path.as_ref();
        let shown = || path.display().to_string();
        let metadata = std::fs::metadata(path).map_err(|source| SecretError::File { path: shown(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if metadata.permissions().mode() & 0o077 != 0 {
                return Err(SecretError::Exposed { path: shown() });
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let bytes = std::fs::read(path).map_err(|source| SecretError::File { path: shown(), source })?;
        Secret::new(bytes.strip_suffix(b"\n").unwrap_or(&bytes))
    }

    /// The secret in the environment variable `name`.
    ///
    /// # Errors
    /// When the variable is not set or empty.
    pub fn from_env(name: &str) -> Result<Secret, SecretError> {
        let value = std::env::var(name).map_err(|_| SecretError::NoVariable(name.to_owned()))?;
        Secret::new(value)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}
