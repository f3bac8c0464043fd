//! Every input a fuzz run found (`fixtures/fuzz/<target>/`, saved by
//! `scripts/fuzz`), replayed against the same properties the fuzz targets
//! check, plus a few inputs that once mattered to the code by hand.

#[path = "support/fuzz_checks.rs"]
mod fuzz_checks;

use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 6] = [
    ("routing", fuzz_checks::routing),
    ("edge_key", fuzz_checks::edge_key),
    ("signature_headers", fuzz_checks::signature_headers),
    ("browse_paths", fuzz_checks::browse_paths),
    ("multipart_upload", fuzz_checks::multipart_upload),
    ("gossip_wire", fuzz_checks::gossip_wire),
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
