//! Facts about the machine itself.

use std::net::{IpAddr, Ipv4Addr};

/// The first IPv4 address of this machine that is not a loopback one: the
/// last resort for the address other agents use to reach this one.
pub fn first_non_loopback_ipv4() -> Option<Ipv4Addr> {
    let networks = sysinfo::Networks::new_with_refreshed_list().ok()?;
    let mut names: Vec<&std::ffi::OsString> = networks.keys().collect();
    // Interfaces in a stable order, so the choice does not change between starts.
    names.sort();
    names.into_iter().find_map(|name| {
        networks[name]
            .ip_networks()
            .iter()
            .find_map(|network| match network.addr {
                IpAddr::V4(ip)
                    if !ip.is_loopback() && !ip.is_unspecified() && !ip.is_link_local() =>
                {
                    Some(ip)
                }
                _ => None,
            })
    })
}
