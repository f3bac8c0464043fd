//! The machine the agent runs on, as `/host/info` reports it.

use std::fmt;
use std::future::Future;

use berth_domain::host::HostInfo;

#[derive(Debug, Clone)]
pub struct HostProbeError(pub String);

impl fmt::Display for HostProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostProbeError {}

pub trait HostProbe: Clone + Send + Sync + 'static {
    /// PCI devices and physical disks. A machine with neither gives empty
    /// lists, not an error.
    ///
    /// # Errors
    /// When the host's files cannot be read at all.
    fn host_info(&self) -> impl Future<Output = Result<HostInfo, HostProbeError>> + Send;
}
