use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the client stack, shared by every outbound channel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Time allowed to open a connection.
    pub connect_timeout_ms: u64,
    /// Deadline of a call whose caller set none.
    pub default_deadline_ms: u64,
    /// Attempts of an idempotent call, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// HTTP/2 keep-alive: a ping every interval, the connection dropped when
    /// one is not answered within the timeout.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Longest pause between two attempts to re-establish a health watch.
    pub health_retry_max_ms: u64,
    /// Largest request body buffered to allow a retry; larger ones are sent once.
    pub max_retry_buffer_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            default_deadline_ms: 30_000,
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 1_000,
            keepalive_interval_ms: 10_000,
            keepalive_timeout_ms: 5_000,
            health_retry_max_ms: 2_000,
            max_retry_buffer_bytes: 4 << 20,
        }
    }
}

impl ClientConfig {
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
    pub(crate) fn default_deadline(&self) -> Duration {
        Duration::from_millis(self.default_deadline_ms.max(1))
    }
}
