//! The errors commands return to the page: a kind the UI can act on and a
//! sentence it can show.

use serde::Serialize;

#[derive(Debug, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum AppError {
    #[error("not in a call")]
    NotInCall,
    #[error("already in a call")]
    AlreadyInCall,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for AppError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.to_string())
    }
}

pub type AppResult<T> = Result<T, AppError>;
