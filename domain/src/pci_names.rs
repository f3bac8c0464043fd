//! Names for PCI devices from the PCI ID database's text format (`pci.ids`,
//! as the host's hwdata or pciutils package installs it), learnt in one
//! pass over its lines for only the devices asked about: the database is
//! never held in memory, and berth carries no copy of it (a built-in table
//! cost every process 1.35 MB of relocated memory).
//!
//! The format: a vendor line is four hex digits, two spaces and the name;
//! the vendor's device lines follow, each one tab, four hex digits, two
//! spaces and the name; subsystem lines (two tabs) and comments (`#`) are
//! skipped; the class section (`C 02  Network controller`) ends the
//! vendors.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::{PciDevice, UNKNOWN};

/// What one line of the database says, for a lookup of names.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Vendor(u16, &'a str),
    Device(u16, &'a str),
    /// The class section begins: no vendor or device follows.
    Classes,
    /// A comment, a subsystem, a blank or an unreadable line.
    Other,
}

impl<'a> Line<'a> {
    pub fn read(line: &'a str) -> Line<'a> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with("C ") {
            return Line::Classes;
        }
        if let Some(device) = line.strip_prefix('\t') {
            return match id_and_name(device) {
                Some((id, name)) => Line::Device(id, name),
                None => Line::Other,
            };
        }
        match id_and_name(line) {
            Some((id, name)) => Line::Vendor(id, name),
            None => Line::Other,
        }
    }
}

/// `8086  Intel Corporation`: four hex digits, whitespace, a name.
fn id_and_name(text: &str) -> Option<(u16, &str)> {
    let digits = text.get(..4)?;
    if !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let rest = &text[4..];
    // A subsystem line under a tab also starts with hex digits, but its
    // four are followed by a space and four more, not by the name.
    if !rest.starts_with("  ") {
        return None;
    }
    let name = rest.trim();
    if name.is_empty() {
        return None;
    }
    Some((u16::from_str_radix(digits, 16).ok()?, name))
}

/// The names wanted for a host's devices, filled in line by line.
#[derive(Debug, Default)]
pub struct NameLookup {
    /// Each vendor asked about, with the devices asked about under it.
    wanted: BTreeMap<u16, BTreeSet<u16>>,
    wanted_devices: usize,
    vendors: BTreeMap<u16, String>,
    devices: BTreeMap<(u16, u16), String>,
    /// The vendor whose device lines are being read, if one asked about.
    current: Option<u16>,
    done: bool,
}

impl NameLookup {
    /// A lookup for these (vendor, device) IDs as sysfs gave them; a
    /// missing ID is never named.
    pub fn for_devices<'i>(ids: impl IntoIterator<Item = &'i (Option<u16>, Option<u16>)>) -> Self {
        let mut wanted: BTreeMap<u16, BTreeSet<u16>> = BTreeMap::new();
        for (vendor, device) in ids {
            if let Some(vendor) = vendor {
                let devices = wanted.entry(*vendor).or_default();
                devices.extend(*device);
            }
        }
        NameLookup {
            done: wanted.is_empty(),
            wanted_devices: wanted.values().map(BTreeSet::len).sum(),
            wanted,
            ..NameLookup::default()
        }
    }

    /// Whether another line could still name something asked about.
    pub fn wants_more(&self) -> bool {
        !self.done
    }

    /// Learns from one line of the database.
    pub fn feed(&mut self, line: &str) {
        if self.done {
            return;
        }
        match Line::read(line) {
            Line::Vendor(id, name) => {
                self.current = self.wanted.contains_key(&id).then_some(id);
                if self.current.is_some() {
                    self.vendors.insert(id, name.to_string());
                }
            }
            Line::Device(id, name) => {
                if let Some(vendor) = self.current {
                    if self.wanted[&vendor].contains(&id) {
                        self.devices.insert((vendor, id), name.to_string());
                    }
                }
            }
            Line::Classes => self.done = true,
            Line::Other => {}
        }
        if self.vendors.len() == self.wanted.len() && self.devices.len() == self.wanted_devices {
            self.done = true;
        }
    }

    /// The device's names as `/host/info` lists them: `unknown` for what
    /// the database (or sysfs) did not say.
    pub fn names(&self, vendor: Option<u16>, device: Option<u16>) -> PciDevice {
        let vendor_name = vendor.and_then(|id| self.vendors.get(&id));
        let device_name = vendor.zip(device).and_then(|ids| self.devices.get(&ids));
        PciDevice {
            vendor: vendor_name.map_or(UNKNOWN, String::as_str).to_string(),
            name: device_name.map_or(UNKNOWN, String::as_str).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCERPT: &str = "\
# comment: 8086  not a vendor
8086  Intel Corporation
\t100e  82540EM Gigabit Ethernet Controller
\t\t1028 002e  Optiplex GX260
\t100f  82545EM Gigabit Ethernet Controller (Copper)
1af4  Red Hat, Inc.
\t1000  Virtio network device
C 02  Network controller
\t00  Ethernet controller
";

    fn look_up(ids: &[(Option<u16>, Option<u16>)], text: &str) -> NameLookup {
        let mut lookup = NameLookup::for_devices(ids);
        for line in text.lines() {
            lookup.feed(line);
        }
        lookup
    }

    #[test]
    fn lines_of_each_kind() {
        assert_eq!(
            Line::read("8086  Intel Corporation\n"),
            Line::Vendor(0x8086, "Intel Corporation")
        );
        assert_eq!(
            Line::read("\t100e  82540EM Gigabit Ethernet Controller\r\n"),
            Line::Device(0x100e, "82540EM Gigabit Ethernet Controller")
        );
        assert_eq!(Line::read("\t\t1028 002e  Optiplex GX260"), Line::Other);
        assert_eq!(Line::read("# 8086  comment"), Line::Other);
        assert_eq!(Line::read("C 02  Network controller"), Line::Classes);
        assert_eq!(Line::read(""), Line::Other);
        assert_eq!(Line::read("zz86  Not hex"), Line::Other);
        assert_eq!(Line::read("8086"), Line::Other);
        assert_eq!(Line::read("8086  "), Line::Other);
        assert_eq!(Line::read("\tü00e  multibyte where digits go"), Line::Other);
    }

    #[test]
    fn names_the_devices_asked_about_and_no_others() {
        let ids = [(Some(0x8086), Some(0x100e)), (Some(0x1af4), Some(0xfff0))];
        let lookup = look_up(&ids, EXCERPT);
        assert_eq!(
            lookup.names(Some(0x8086), Some(0x100e)),
            PciDevice {
                vendor: "Intel Corporation".into(),
                name: "82540EM Gigabit Ethernet Controller".into(),
            }
        );
        // The vendor is known, its device is not.
        assert_eq!(
            lookup.names(Some(0x1af4), Some(0xfff0)),
            PciDevice {
                vendor: "Red Hat, Inc.".into(),
                name: UNKNOWN.into(),
            }
        );
        // Not asked about, so not learnt: nothing more is kept than needed.
        assert_eq!(lookup.names(Some(0x8086), Some(0x100f)).name, UNKNOWN);
        assert_eq!(lookup.devices.len(), 1);
    }

    #[test]
    fn a_device_is_named_only_under_its_own_vendor() {
        // 1000 is a Red Hat device in the excerpt, not an Intel one.
        let lookup = look_up(&[(Some(0x8086), Some(0x1000))], EXCERPT);
        assert_eq!(lookup.names(Some(0x8086), Some(0x1000)).name, UNKNOWN);
    }

    #[test]
    fn missing_ids_and_an_empty_database_name_nothing() {
        let ids = [(None, Some(0x100e)), (Some(0x8086), None)];
        let lookup = look_up(&ids, EXCERPT);
        assert_eq!(
            lookup.names(None, Some(0x100e)),
            PciDevice {
                vendor: UNKNOWN.into(),
                name: UNKNOWN.into()
            }
        );
        assert_eq!(lookup.names(Some(0x8086), None).vendor, "Intel Corporation");
        let empty = look_up(&[(Some(0x8086), Some(0x100e))], "");
        assert_eq!(empty.names(Some(0x8086), Some(0x100e)).vendor, UNKNOWN);
    }

    #[test]
    fn stops_wanting_lines_once_everything_is_named_or_the_classes_begin() {
        let mut lookup = NameLookup::for_devices(&[(Some(0x8086), Some(0x100e))]);
        assert!(lookup.wants_more());
        lookup.feed("8086  Intel Corporation");
        assert!(lookup.wants_more());
        lookup.feed("\t100e  82540EM Gigabit Ethernet Controller");
        assert!(!lookup.wants_more());

        let mut unknown = NameLookup::for_devices(&[(Some(0xfff1), Some(1))]);
        unknown.feed("C 02  Network controller");
        assert!(!unknown.wants_more());
        // A vendor line after the classes would be something else; ignored.
        unknown.feed("fff1  Not a vendor");
        assert_eq!(unknown.names(Some(0xfff1), Some(1)).vendor, UNKNOWN);

        assert!(!NameLookup::for_devices(&[]).wants_more());
    }
}
