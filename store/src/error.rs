//! Why a store request fails, grouped by who is at fault (the way rustls groups its
//! errors), and how each is answered on the link:
//!
//! - **the client**: the request cannot be done as asked ([`Refused`]: a version
//!   conflict, a key or value over the limits); answered with its own code and message;
//! - **the edge**: it sent the request to a store that does not own the key's partition
//!   ([`StoreError::WrongPartition`]: its cluster map is stale); answered
//!   `wrong_partition`;
//! - **the store**: its engine failed, a stored record does not decode, or the committer
//!   is gone ([`Failure`]); answered `internal` with a fixed message, the detail going to
//!   the store's log only. A write that failed so was not written.
//!
//! [`StoreError::answer`] is the one place where each becomes its link error code.

use std::borrow::Cow;

use wire::link::ErrorCode;

use crate::engine::EngineError;

/// Why a read or a write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The client's fault: the request cannot be done as asked.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The edge's fault: the partition is not served by this store.
    #[error("partition {0} is not served by this store")]
    WrongPartition(u32),
    /// The edge's fault: a presence write that is not one of its own members'.
    #[error(transparent)]
    Presence(#[from] crate::presence::Refusal),
    /// The store's fault: nothing was written, nothing can be read.
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// A request the store refuses as asked (the client's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `if_version` did not match.
    #[error("version conflict: current version is {current}")]
    Conflict {
        /// The key's current version (0: absent).
        current: u64,
    },
    /// The key or value is over the store's limits.
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write repeats a remembered msg_id but asks for something else (another kind,
    /// condition or value): answering it with the first outcome would be a lie.
    #[error("msg_id already used for a different write to this key")]
    MsgIdReused,
}

/// The store failed (its fault, never the client's).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// The storage engine failed (I/O, a lock poisoned).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// What the engine returned is not what the store wrote.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The committer thread is gone: the batch never reached the engine.
    #[error("the committer thread stopped")]
    Stopped,
}

/// A stored record that does not decode, or a log whose chains do not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what}: {detail}")]
pub struct Corrupt {
    /// Which record ("value record", "log record", ...).
    pub what: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

impl Corrupt {
    /// `what` is corrupt because of `detail`.
    pub fn new(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            what,
            detail: detail.to_string(),
        }
    }
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<Corrupt> for StoreError {
    fn from(e: Corrupt) -> Self {
        Self::Failed(e.into())
    }
}

/// Who is at fault for a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client asked for what the store refuses.
    Client,
    /// The edge routed the request to the wrong store.
    Edge,
    /// The store failed.
    Store,
}

/// How a [`StoreError`] is answered on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The error code.
    pub code: ErrorCode,
    /// The message for the client (a store failure's detail stays in the store's log).
    pub message: Cow<'a, str>,
    /// The key's current version, for a conflict (0 otherwise).
    pub current: u64,
}

impl StoreError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Refused(_) => Fault::Client,
            Self::WrongPartition(_) | Self::Presence(_) => Fault::Edge,
            Self::Failed(_) => Fault::Store,
        }
    }

    /// The link error this is answered with.
    pub fn answer(&self) -> Answer<'static> {
        let (code, current) = match self {
            Self::Refused(Refused::Conflict { current }) => (ErrorCode::Conflict, *current),
            Self::Refused(Refused::TooLarge { .. }) => (ErrorCode::TooLarge, 0),
            Self::Refused(Refused::MsgIdReused) => (ErrorCode::BadRequest, 0),
            Self::WrongPartition(_) => (ErrorCode::WrongPartition, 0),
            Self::Presence(_) => (ErrorCode::BadRequest, 0),
            Self::Failed(_) => {
                return Answer {
                    code: ErrorCode::Internal,
                    message: Cow::Borrowed("storage failure"),
                    current: 0,
                };
            }
        };
        Answer {
            code,
            message: Cow::Owned(self.to_string()),
            current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_has_its_code_and_a_store_failure_keeps_its_detail_to_itself() {
        let conflict = StoreError::from(Refused::Conflict { current: 7 });
        assert_eq!(conflict.fault(), Fault::Client);
        assert_eq!(
            conflict.answer(),
            Answer {
                code: ErrorCode::Conflict,
                message: "version conflict: current version is 7".into(),
                current: 7
            }
        );
        let big = StoreError::from(Refused::TooLarge {
            what: "key",
            len: 5000,
            max: 4096,
        });
        assert_eq!(big.fault(), Fault::Client);
        assert_eq!(big.answer().code, ErrorCode::TooLarge);
        assert_eq!(big.answer().message, "key is 5000 bytes; the limit is 4096");
        let reused = StoreError::from(Refused::MsgIdReused);
        assert_eq!(reused.fault(), Fault::Client);
        assert_eq!(reused.answer().code, ErrorCode::BadRequest);
        let wrong = StoreError::WrongPartition(9);
        assert_eq!(wrong.fault(), Fault::Edge);
        assert_eq!(wrong.answer().code, ErrorCode::WrongPartition);
        for failed in [
            StoreError::from(EngineError("disk on fire".into())),
            StoreError::from(Corrupt::new("value record", "secret detail")),
            StoreError::Failed(Failure::Stopped),
        ] {
            assert_eq!(failed.fault(), Fault::Store);
            assert_eq!(
                failed.answer(),
                Answer {
                    code: ErrorCode::Internal,
                    message: "storage failure".into(),
                    current: 0
                },
                "{failed}"
            );
        }
    }
}
