//! What `GET /host/info` reports about the machine (reference §6.2).

/// What a name the machine does not tell is reported as.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// The vendor's name from the PCI ID database, or `unknown`.
    pub vendor: String,
    /// The device's name, or `unknown`.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalDisk {
    /// The disk's `device/vendor` text, trimmed, or `unknown`.
    pub vendor: String,
    /// Bytes.
    pub size: u64,
}

/// Empty lists when the machine has no PCI bus or no disks to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub pci_devices: Vec<PciDevice>,
    pub physical_disks: Vec<PhysicalDisk>,
}

/// Block devices that are not physical disks: loop devices (the reference
/// skips only these).
pub fn is_listed_block_device(name: &str) -> bool {
    !name.starts_with("loop")
}

/// Parses a sysfs ID such as `0x8086`.
pub fn parse_pci_id(text: &str) -> Option<u16> {
    u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_ids_and_block_devices() {
        assert_eq!(parse_pci_id("0x8086\n"), Some(0x8086));
        assert_eq!(parse_pci_id("zz"), None);
        assert!(is_listed_block_device("sda") && is_listed_block_device("nvme0n1"));
        assert!(!is_listed_block_device("loop7"));
    }
}
