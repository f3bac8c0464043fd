//! The address other agents reach this one at, and why it was chosen
//! (`berth doctor` shows the why).

use std::net::{IpAddr, Ipv4Addr};

use berth_adapters::host;
use berth_domain::doctor::AdvertiseReason;
use berth_domain::options::Options;

/// The machine's host name (in a container, by default its ID, which is
/// how the agent finds its own container).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
}

/// AGENT_ADVERTISE_ADDR, else the agent's container address, else the
/// machine's first non-loopback IPv4, else AGENT_HOST.
pub fn choose(options: &Options, container_address: Option<IpAddr>) -> (IpAddr, AdvertiseReason) {
    if let Some(address) = options.advertise_addr {
        return (address, AdvertiseReason::Option);
    }
    if let Some(address) = container_address {
        return (address, AdvertiseReason::Container);
    }
    if let Some(address) = host::first_non_loopback_ipv4() {
        return (IpAddr::V4(address), AdvertiseReason::FirstInterface);
    }
    let listen = if options.host.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        options.host
    };
    (listen, AdvertiseReason::ListenAddress)
}
