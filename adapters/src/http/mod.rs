//! The HTTPS server adapter.

mod activity;
mod lingering;
pub mod probe;
pub mod revocation;
mod server;
pub mod tls;

pub use server::{HttpServer, ServerLimits};
