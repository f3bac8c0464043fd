//! The HTTPS server adapter.

mod activity;
pub mod probe;
mod server;
pub mod tls;

pub use server::{HttpServer, ServerLimits};
