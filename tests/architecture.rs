//! Checks that keep the architecture's invariants and the docs true.

use std::process::Command;

use berth_domain::options::OPTION_SPECS;

/// Architecture Invariant 1: the domain depends on no runtime, network,
/// filesystem or clock crate.
#[test]
fn domain_depends_on_no_io_crate() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "berth-domain",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let forbidden = [
        "tokio",
        "hyper",
        "warp",
        "reqwest",
        "russh",
        "serf",
        "bollard",
        "sysinfo",
        "cap-std",
        "mio",
        "socket2",
        "async-std",
    ];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        for crate_name in forbidden {
            assert!(
                name != crate_name && !name.starts_with(&format!("{crate_name}-")),
                "berth-domain depends on {name}"
            );
        }
    }
    assert!(
        tree.contains("berth-domain"),
        "cargo tree printed no tree: {tree}"
    );
}

#[test]
fn readme_documents_every_option() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for spec in OPTION_SPECS {
        assert!(
            readme.contains(&format!("`{}`", spec.env)),
            "README lacks {}",
            spec.env
        );
        assert!(
            readme.contains(&format!("`--{}`", spec.flag)),
            "README lacks --{}",
            spec.flag
        );
    }
}

/// Every client socket is opened by `adapters/src/dial.rs`, which turns
/// Nagle's algorithm off: a connection opened elsewhere would hold small
/// writes back for the peer's delayed ack (40 ms a request through the
/// Edge tunnel, found against the real Portainer).
#[test]
fn client_sockets_are_opened_by_dial_only() {
    fn sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "adapters/src"] {
        sources(&root.join(dir), &mut files);
    }
    let dial = root.join("adapters/src/dial.rs");
    assert!(files.contains(&dial), "no dial.rs among {files:?}");
    let elsewhere: Vec<_> = files
        .iter()
        .filter(|path| **path != dial)
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.contains("TcpStream::connect(") || text.contains("TcpSocket::")
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "client sockets opened outside dial::tcp: {elsewhere:?}"
    );
}
