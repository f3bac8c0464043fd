//! Every input a fuzz run found (`fixtures/fuzz/<target>/`, saved by
//! `scripts/fuzz`), replayed against the same properties the fuzz targets
//! check, plus a few inputs that once mattered to the code by hand.

#[path = "support/fuzz_checks.rs"]
mod fuzz_checks;
#[path = "support/fuzz_ssh_checks.rs"]
mod fuzz_ssh_checks;

use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 9] = [
    ("routing", fuzz_checks::routing),
    ("edge_key", fuzz_checks::edge_key),
    ("signature_headers", fuzz_checks::signature_headers),
    ("browse_paths", fuzz_checks::browse_paths),
    ("multipart_upload", fuzz_checks::multipart_upload),
    ("gossip_wire", fuzz_checks::gossip_wire),
    ("ssh_packets", fuzz_ssh_checks::ssh_packets),
    ("ssh_messages", fuzz_ssh_checks::ssh_messages),
    ("ssh_session", fuzz_ssh_checks::ssh_session),
];

#[test]
fn saved_fuzz_findings_still_hold() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz");
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let Ok(entries) = std::fs::read_dir(base.join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let input = std::fs::read(entry.path()).unwrap();
            check(&input);
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved fuzz inputs replayed");
}

#[test]
fn hand_picked_inputs_hold() {
    let cases: [&[u8]; 8] = [
        b"",
        b"\0\0\0",
        b"GET\0/v1.41/containers/json\0node-b\0node-a",
        b"../..\0..\0bytes=0-",
        b"%2e%2e/etc\0a/b\0bytes=5-2",
        b"--XyZ\r\nContent-Disposition: form-data; name=\"Path\"\r\n\r\n/\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../x\"\r\n\r\nhi\r\n--XyZ--\r\n",
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n",
        "aHR0cHM6Ly9wfHA6ODAwMHxmcHwz".as_bytes(),
    ];
    for input in cases {
        for (_, check) in TARGETS {
            check(input);
        }
    }
}

/// A session that gets as far as the connection protocol: the login
/// accepted, then a channel open for the allowed target, data on a channel
/// that does not exist, a window adjust past 2^32, a global request, and a
/// KEXINIT that starts a re-key the server never finishes.
#[test]
fn scripted_sessions_end_cleanly() {
    fn message(bytes: &[u8]) -> Vec<u8> {
        [&(bytes.len() as u16).to_be_bytes()[..], bytes].concat()
    }
    fn string(text: &[u8]) -> Vec<u8> {
        [&(text.len() as u32).to_be_bytes()[..], text].concat()
    }
    let open = [
        &[90u8][..],
        &string(b"direct-tcpip"),
        &[0, 0, 0, 1, 0, 0, 0x80, 0, 0, 0, 0x80, 0],
        &string(b"127.0.0.1"),
        &[0, 0, 0, 1],
        &string(b"127.0.0.1"),
        &[0, 0, 0, 2],
    ]
    .concat();
    let stray_data = [&[94u8, 0, 0, 0, 99][..], &string(b"hello")].concat();
    let window = [95u8, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    let global = [&[80u8][..], &string(b"keepalive@openssh.com"), &[1]].concat();
    let kexinit = berth_adapters::tunnel::ssh::kex::client_kexinit([3; 16]);
    let mut script = vec![1u8];
    for part in [&open[..], &stray_data, &window, &window, &global, &kexinit] {
        script.extend(message(part));
    }
    assert_eq!(fuzz_ssh_checks::session_outcome(&script), Some(true));
    assert_eq!(fuzz_ssh_checks::session_outcome(&[1]), Some(true));
    // The login left to the script, which never accepts it.
    assert_eq!(fuzz_ssh_checks::session_outcome(&[0]), Some(false));
}
