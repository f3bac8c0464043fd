//! Facts about the machine itself: its addresses, and the `HostProbe` port
//! over sysfs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use berth_domain::host::{is_listed_block_device, parse_pci_id, HostInfo, PciDevice, PhysicalDisk};
use berth_ports::{HostProbe, HostProbeError};

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

/// Every address of this machine's interfaces, loopback included.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut addresses: Vec<IpAddr> = networks
        .values()
        .flat_map(|network| network.ip_networks().iter().map(|n| n.addr))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The `HostProbe` port over sysfs under the host's root mount (`/host` in
/// the container), with names from the PCI ID database built into berth.
#[derive(Debug, Clone)]
pub struct SysfsHostProbe {
    root: PathBuf,
}

impl SysfsHostProbe {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SysfsHostProbe { root: root.into() }
    }
}

impl HostProbe for SysfsHostProbe {
    async fn host_info(&self) -> Result<HostInfo, HostProbeError> {
        let root = self.root.clone();
        // Many small blocking reads: off the async threads.
        tokio::task::spawn_blocking(move || read_host_info(&root))
            .await
            .map_err(|error| HostProbeError(format!("host probe stopped: {error}")))
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

/// Entries of a folder, by name; none when it does not exist.
fn entries(folder: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    (
                        entry.file_name().to_string_lossy().into_owned(),
                        entry.path(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn read_host_info(root: &Path) -> HostInfo {
    let pci_devices = entries(&root.join("sys/bus/pci/devices"))
        .into_iter()
        .map(|(_, device)| {
            let vendor_id = read_trimmed(&device.join("vendor")).and_then(|id| parse_pci_id(&id));
            let device_id = read_trimmed(&device.join("device")).and_then(|id| parse_pci_id(&id));
            pci_names(vendor_id, device_id)
        })
        .collect();
    let physical_disks = entries(&root.join("sys/block"))
        .into_iter()
        .filter(|(name, _)| is_listed_block_device(name))
        .map(|(_, disk)| PhysicalDisk {
            vendor: read_trimmed(&disk.join("device/vendor"))
                .unwrap_or_else(|| UNKNOWN.to_string()),
            size: read_trimmed(&disk.join("size"))
                .and_then(|sectors| sectors.parse::<u64>().ok())
                .map_or(0, |sectors| sectors.saturating_mul(512)),
        })
        .collect();
    HostInfo {
        pci_devices,
        physical_disks,
    }
}

const UNKNOWN: &str = "unknown";

fn pci_names(vendor_id: Option<u16>, device_id: Option<u16>) -> PciDevice {
    if let (Some(vendor), Some(device)) = (vendor_id, device_id) {
        if let Some(known) = pci_ids::Device::from_vid_pid(vendor, device) {
            return PciDevice {
                vendor: known.vendor().name().to_string(),
                name: known.name().to_string(),
            };
        }
    }
    let vendor = vendor_id
        .and_then(|id| pci_ids::Vendors::iter().find(|v| v.id() == id))
        .map_or(UNKNOWN, |v| v.name());
    PciDevice {
        vendor: vendor.to_string(),
        name: UNKNOWN.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/sysfs");

    #[tokio::test]
    async fn reads_a_sysfs_tree() {
        let info = SysfsHostProbe::new(FIXTURE).host_info().await.unwrap();
        assert_eq!(
            info.pci_devices,
            vec![
                PciDevice {
                    vendor: "Intel Corporation".into(),
                    name: "82540EM Gigabit Ethernet Controller".into()
                },
                PciDevice {
                    vendor: "Red Hat, Inc.".into(),
                    name: "unknown".into()
                },
                PciDevice {
                    vendor: "unknown".into(),
                    name: "unknown".into()
                },
            ]
        );
        assert_eq!(
            info.physical_disks,
            vec![
                PhysicalDisk {
                    vendor: "ATA".into(),
                    size: 1_000_215_216 * 512
                },
                PhysicalDisk {
                    vendor: "unknown".into(),
                    size: 41_943_040 * 512
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_host_without_pci_or_disks_answers_empty_lists() {
        let empty = std::env::temp_dir().join(format!("berth-empty-sysfs-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let info = SysfsHostProbe::new(&empty).host_info().await.unwrap();
        assert_eq!(info, HostInfo::default());
        std::fs::remove_dir_all(empty).unwrap();
    }

    #[tokio::test]
    async fn reads_this_machine() {
        let info = SysfsHostProbe::new("/").host_info().await.unwrap();
        // Whatever the machine has, every disk listed is a real block device.
        assert!(info
            .physical_disks
            .iter()
            .all(|disk| !disk.vendor.is_empty()));
    }
}
