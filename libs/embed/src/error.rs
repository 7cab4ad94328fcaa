//! The encoder's errors. Callers map them to their own classes (the indexer:
//! `InvalidModel` → FAILED_PRECONDITION, the rest → INTERNAL).

/// What went wrong loading a model or embedding with it.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory does not hold a usable BERT-family model: a bad
    /// or unsupported config, a missing or misshapen tensor, an unreadable
    /// tokenizer. The message names the model and what is wrong.
    #[error("{0}")]
    InvalidModel(String),
    /// Tokenizing or encoding failed on the input.
    #[error("{0}")]
    Backend(String),
    /// Reading the model's files.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl EmbedError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;
