//! The HTTPS server adapter.

mod activity;
mod server;
pub mod tls;

pub use server::{HttpsServer, ServerLimits};
