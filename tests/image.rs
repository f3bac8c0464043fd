//! berth's image for two platforms: `scripts/build-image --platforms
//! linux/amd64,linux/arm64 --push` to a real registry (Debian's
//! docker-registry on loopback, with its own login), read back through the
//! registry's API (the index, each image's configuration and layer), then
//! pulled and run by the test engine, which must get the amd64 image.

mod support;

use std::io::Read;
use std::process::Command;

use serde_json::Value;
use support::berth_process::{engine_host, from_env_or_skip};
use support::registry::{self, Registry, PASSWORD, USER};

const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The budget of one architecture's image, as pulled (its compressed
/// layer and configuration).
const IMAGE_BUDGET: u64 = 15 * 1000 * 1000;

/// The ELF machine field: 62 x86-64, 183 AArch64.
fn elf_machine(binary: &[u8]) -> u16 {
    assert_eq!(&binary[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([binary[18], binary[19]])
}

/// The file `name` in an uncompressed tar.
fn tar_member(tar: &[u8], name: &str) -> Vec<u8> {
    let mut offset = 0;
    while offset + 512 <= tar.len() && tar[offset] != 0 {
        let header = &tar[offset..offset + 512];
        let field = |range: std::ops::Range<usize>| {
            String::from_utf8_lossy(&header[range])
                .trim_end_matches('\0')
                .trim()
                .to_string()
        };
        let size = u64::from_str_radix(&field(124..136), 8).unwrap() as usize;
        let start = offset + 512;
        // A PAX header names the next member; the member itself follows.
        if header[156] != b'x' && field(0..100).trim_start_matches("./") == name {
            return tar[start..start + size].to_vec();
        }
        offset = start + size.div_ceil(512) * 512;
    }
    panic!("no {name} in the layer");
}

async fn json(registry: &Registry, path: &str, accept: &str) -> Value {
    let (status, kind, body) = registry.get(path, accept).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    if accept != "*/*" {
        assert_eq!(kind, accept, "{path}");
    }
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_for_two_platforms_is_pushed_with_an_index() {
    let (Some(engine), Some(registry_binary)) = (engine_host(), registry::binary()) else {
        return;
    };
    let Some(arm64) = from_env_or_skip(
        "BERTH_TEST_ARM64",
        "the arm64 release binary",
        "run scripts/test, which builds it with scripts/build-release",
    ) else {
        return;
    };
    let registry = Registry::start(&registry_binary);
    let reference = format!("{}/berth-multi:test", registry.address);
    let root = env!("CARGO_MANIFEST_DIR");
    let pushed = Command::new(format!("{root}/scripts/build-image"))
        .args([
            "--platforms",
            "linux/amd64,linux/arm64",
            "--push",
            &reference,
        ])
        .env("REGISTRY_USER", USER)
        .env("REGISTRY_PASSWORD", PASSWORD)
        .current_dir(root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success(), "{said}");
    eprintln!("{said}");

    // The index names both platforms.
    let index = json(&registry, "/v2/berth-multi/manifests/test", LIST).await;
    let mut platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["platform"]["os"], "linux");
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    platforms.sort();
    let arches: Vec<&str> = platforms.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(arches, ["amd64", "arm64"]);

    let binaries = [
        ("amd64", format!("{root}/target/dist/berth-linux-amd64"), 62),
        ("arm64", arm64, 183),
    ];
    // The arm64 binary stays within the amd64 one's size.
    let size = |path: &str| std::fs::metadata(path).unwrap().len();
    let (amd64_size, arm64_size) = (size(&binaries[0].1), size(&binaries[1].1));
    eprintln!("figure: binaries amd64 {amd64_size} bytes, arm64 {arm64_size} bytes");
    assert!(
        arm64_size <= amd64_size,
        "the arm64 binary ({arm64_size} B) is larger than the amd64 one ({amd64_size} B)"
    );
    for ((arch, digest), (expected_arch, binary, machine)) in platforms.iter().zip(binaries) {
        assert_eq!(arch, expected_arch);
        let manifest = json(
            &registry,
            &format!("/v2/berth-multi/manifests/{digest}"),
            MANIFEST,
        )
        .await;
        // Each image's configuration names its architecture and is the
        // Dockerfile's.
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config = json(
            &registry,
            &format!("/v2/berth-multi/blobs/{config_digest}"),
            "*/*",
        )
        .await;
        assert_eq!(config["architecture"], arch.as_str());
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/berth"])
        );
        assert_eq!(config["config"]["Labels"]["io.portainer.agent"], "true");
        assert_eq!(
            config["config"]["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "/berth", "healthcheck"])
        );
        // Its one layer holds the binary built for it, and the CA bundle.
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        let size =
            layers[0]["size"].as_u64().unwrap() + manifest["config"]["size"].as_u64().unwrap();
        eprintln!("figure: the linux/{arch} image is {size} bytes as pulled");
        assert!(
            size < IMAGE_BUDGET,
            "linux/{arch}: {size} bytes, over {IMAGE_BUDGET}"
        );
        let layer_digest = layers[0]["digest"].as_str().unwrap();
        let (status, _, compressed) = registry
            .get(&format!("/v2/berth-multi/blobs/{layer_digest}"), "*/*")
            .await;
        assert_eq!(status, 200);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut tar)
            .unwrap();
        let inside = tar_member(&tar, "berth");
        assert_eq!(elf_machine(&inside), machine, "linux/{arch}'s /berth");
        assert!(
            inside == std::fs::read(&binary).unwrap(),
            "linux/{arch}'s /berth is not {binary}"
        );
        let bundle = tar_member(&tar, "etc/ssl/certs/ca-certificates.crt");
        assert!(String::from_utf8_lossy(&bundle).contains("BEGIN CERTIFICATE"));
    }

    // The engine (amd64) pulling the tag gets the amd64 image, and runs it.
    registry.pull(&engine, &reference);
    let architecture = registry.docker(
        &engine,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Architecture}}",
            &reference,
        ],
    );
    assert_eq!(architecture.trim(), "amd64");
    let version = registry.docker(&engine, &["run", "--rm", &reference, "--version"]);
    assert!(version.starts_with("berth "), "{version}");
    registry.docker(&engine, &["rmi", &reference]);
}
