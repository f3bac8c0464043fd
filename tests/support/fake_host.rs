//! A `HostProbe` with a fixed answer.

use berth_domain::host::{HostInfo, PciDevice, PhysicalDisk};
use berth_ports::{HostProbe, HostProbeError};

#[derive(Clone, Default)]
pub struct FakeHostProbe {
    info: Option<HostInfo>,
}

impl FakeHostProbe {
    /// One PCI device and one disk.
    pub fn with_hardware() -> Self {
        FakeHostProbe {
            info: Some(HostInfo {
                pci_devices: vec![PciDevice {
                    vendor: "Intel Corporation".into(),
                    name: "82540EM Gigabit Ethernet Controller".into(),
                }],
                physical_disks: vec![PhysicalDisk {
                    vendor: "ATA".into(),
                    size: 512_110_190_592,
                }],
            }),
        }
    }
}

impl HostProbe for FakeHostProbe {
    async fn host_info(&self) -> Result<HostInfo, HostProbeError> {
        self.info
            .clone()
            .ok_or_else(|| HostProbeError("cannot read /host/sys".into()))
    }
}
