//! Facts about the machine itself: its addresses, and the `HostProbe` port
//! over sysfs.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use berth_domain::host::{is_listed_block_device, parse_pci_id, HostInfo, PhysicalDisk, UNKNOWN};
use berth_domain::pci_names::NameLookup;
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
/// the container), with names from the host's own PCI ID database (as the
/// Go agent takes them).
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
    let ids: Vec<(Option<u16>, Option<u16>)> = entries(&root.join("sys/bus/pci/devices"))
        .into_iter()
        .map(|(_, device)| {
            let vendor_id = read_trimmed(&device.join("vendor")).and_then(|id| parse_pci_id(&id));
            let device_id = read_trimmed(&device.join("device")).and_then(|id| parse_pci_id(&id));
            (vendor_id, device_id)
        })
        .collect();
    let names = pci_names(root, &ids);
    let pci_devices = ids
        .iter()
        .map(|(vendor, device)| names.names(*vendor, *device))
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

/// Where hosts keep the PCI ID database, under their root, in the order
/// the Go agent's library looks (hwdata first, then pciutils' copy).
const PCI_DATABASES: [&str; 4] = [
    "usr/share/hwdata/pci.ids",
    "usr/share/misc/pci.ids",
    "usr/share/hwdata/pci.ids.gz",
    "usr/share/misc/pci.ids.gz",
];

/// A line longer than this is no line of the database (its longest is
/// under 200 bytes); it is skipped, not gathered.
const MAX_PCI_LINE: u64 = 4096;

/// The names of these devices from the first database the host has, read
/// a line at a time and only until everything asked about is named; none
/// (every name `unknown`) when the host has no database.
fn pci_names(root: &Path, ids: &[(Option<u16>, Option<u16>)]) -> NameLookup {
    let mut lookup = NameLookup::for_devices(ids);
    if !lookup.wants_more() {
        return lookup;
    }
    for database in PCI_DATABASES {
        let path = root.join(database);
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let reader: Box<dyn Read> = if database.ends_with(".gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        if let Err(error) = feed_lines(BufReader::new(reader), &mut lookup) {
            // What was read before the fault still names devices.
            tracing::debug!(path = %path.display(), %error, "the PCI ID database could not be read to its end");
        }
        return lookup;
    }
    tracing::debug!(root = %root.display(), "no PCI ID database on the host: PCI devices are unnamed");
    lookup
}

fn feed_lines(mut reader: impl BufRead, lookup: &mut NameLookup) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(256);
    while lookup.wants_more() {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_PCI_LINE)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && read as u64 == MAX_PCI_LINE {
            reader.skip_until(b'\n')?;
            continue;
        }
        lookup.feed(&String::from_utf8_lossy(&line));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::host::PciDevice;

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

    /// A folder for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("berth-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(path.join("sys/bus/pci/devices/0000:00:02.0")).unwrap();
            std::fs::write(
                path.join("sys/bus/pci/devices/0000:00:02.0/vendor"),
                "0x8086\n",
            )
            .unwrap();
            std::fs::write(
                path.join("sys/bus/pci/devices/0000:00:02.0/device"),
                "0x100e\n",
            )
            .unwrap();
            Scratch(path)
        }

        fn database(&self, at: &str, bytes: &[u8]) {
            let path = self.0.join(at);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }

        async fn first_device(&self) -> PciDevice {
            let info = SysfsHostProbe::new(&self.0).host_info().await.unwrap();
            info.pci_devices[0].clone()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const INTEL: &str = "8086  Intel Corporation\n\t100e  82540EM Gigabit Ethernet Controller\n";

    #[tokio::test]
    async fn hwdata_s_database_comes_before_pciutils_copy() {
        let host = Scratch::new("pci-hwdata");
        host.database("usr/share/misc/pci.ids", b"8086  From misc\n");
        host.database("usr/share/hwdata/pci.ids", b"8086  From hwdata\n");
        assert_eq!(host.first_device().await.vendor, "From hwdata");
    }

    #[tokio::test]
    async fn a_gzipped_database_is_read() {
        use std::io::Write;
        let host = Scratch::new("pci-gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(INTEL.as_bytes()).unwrap();
        host.database("usr/share/hwdata/pci.ids.gz", &gz.finish().unwrap());
        assert_eq!(
            host.first_device().await,
            PciDevice {
                vendor: "Intel Corporation".into(),
                name: "82540EM Gigabit Ethernet Controller".into()
            }
        );
    }

    #[tokio::test]
    async fn without_a_database_devices_are_listed_unnamed() {
        let host = Scratch::new("pci-none");
        assert_eq!(
            host.first_device().await,
            PciDevice {
                vendor: UNKNOWN.into(),
                name: UNKNOWN.into()
            }
        );
    }

    #[tokio::test]
    async fn a_broken_database_names_what_came_before_the_fault() {
        let host = Scratch::new("pci-broken");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Its device is not in the text, so the reading goes on to the fault.
        std::io::Write::write_all(&mut gz, b"8086  Intel Corporation\n\t100f  Other\n").unwrap();
        let whole = gz.finish().unwrap();
        // Cut inside the gzip trailer: the text is whole, the check fails.
        let cut = &whole[..whole.len() - 4];
        let mut lookup = NameLookup::for_devices(&[(Some(0x8086), Some(0x100e))]);
        let gz = flate2::read::GzDecoder::new(cut);
        assert!(feed_lines(BufReader::new(gz), &mut lookup).is_err());
        host.database("usr/share/misc/pci.ids.gz", cut);
        assert_eq!(
            host.first_device().await,
            PciDevice {
                vendor: "Intel Corporation".into(),
                name: UNKNOWN.into()
            }
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_skipped_not_gathered() {
        let host = Scratch::new("pci-long");
        let mut text = vec![b'#'; 3 * MAX_PCI_LINE as usize];
        // The long line's tail must not be read as a line of its own.
        text.extend_from_slice(b"8086  Tail of a long line\n");
        text.extend_from_slice(INTEL.as_bytes());
        host.database("usr/share/misc/pci.ids", &text);
        assert_eq!(
            host.first_device().await.name,
            "82540EM Gigabit Ethernet Controller"
        );
        assert_eq!(host.first_device().await.vendor, "Intel Corporation");
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
