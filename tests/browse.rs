//! `/browse/*` through the application, over a temporary host root and
//! volumes root with the real confined adapter.

mod support;

use std::sync::Arc;

use berth::signature::SignatureGuard;
use berth::Agent;
use berth_adapters::fs::ConfinedFiles;
use berth_domain::engine::EngineFacts;
use berth_domain::signature::SignaturePolicy;
use berth_ports::RequestHandler;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use support::fake_cluster::{FakeMembership, FakePeers};
use support::fake_engine::FakeEngine;
use support::fake_host::FakeHostProbe;
use support::files::TestTree;
use support::fixtures::portainer_identity;
use tokio::sync::watch;

type TestAgent = Agent<FakeEngine, FakeMembership, FakePeers, FakeHostProbe, ConfinedFiles>;

fn agent(tree: &TestTree) -> TestAgent {
    let (_, facts) = watch::channel(Arc::new(EngineFacts::unknown()));
    let guard = SignatureGuard::new(SignaturePolicy::new(None, [4; 32], 16));
    Agent::new(
        FakeEngine::unreachable(),
        FakeHostProbe::default(),
        tree.files(),
        facts,
        guard,
        None,
    )
}

async fn call(
    agent: &TestAgent,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Response<()>, Vec<u8>) {
    support::in_process::call(agent, method, uri, headers, body, true).await
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn lists_host_and_volume_folders() {
    let tree = TestTree::new("browse-ls");
    tree.write(&tree.host().join("etc/hosts"), "127.0.0.1 localhost\n");
    tree.write(&tree.volume_data("web").join("index.html"), "<html>");
    let agent = agent(&tree);

    let (response, body) = call(&agent, "GET", "/v2/browse/ls?path=/host/etc", &[], "").await;
    assert_eq!(response.status(), 200);
    let listed = json(&body);
    assert_eq!(listed[0]["Name"], "hosts");
    assert_eq!(listed[0]["Size"], 20);
    assert_eq!(listed[0]["Dir"], false);
    assert!(listed[0]["ModTime"].as_i64().unwrap() > 0);

    let (response, body) = call(&agent, "GET", "/browse/ls?volumeID=web&path=/", &[], "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)[0]["Name"], "index.html");
    let (response, body) = call(&agent, "GET", "/v1/browse/web/ls?path=%2F", &[], "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)[0]["Name"], "index.html");
}

#[tokio::test]
async fn downloads_stream_with_length_date_name_and_ranges() {
    let tree = TestTree::new("browse-get");
    tree.write(&tree.volume_data("data").join("notes.txt"), "0123456789");
    let agent = agent(&tree);
    let (response, body) = call(
        &agent,
        "GET",
        "/v2/browse/get?volumeID=data&path=notes.txt",
        &[],
        "",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(body, b"0123456789");
    assert_eq!(response.headers()["content-length"], "10");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"notes.txt\""
    );
    assert!(response.headers().contains_key("last-modified"));
    assert_eq!(response.headers()["portainer-agent"], "2.23.0");

    let (response, body) = call(
        &agent,
        "GET",
        "/v2/browse/get?volumeID=data&path=notes.txt",
        &[("range", "bytes=3-5")],
        "",
    )
    .await;
    assert_eq!(response.status(), 206);
    assert_eq!(body, b"345");
    assert_eq!(response.headers()["content-range"], "bytes 3-5/10");
    let (response, _) = call(
        &agent,
        "GET",
        "/v2/browse/get?volumeID=data&path=notes.txt",
        &[("range", "bytes=10-")],
        "",
    )
    .await;
    assert_eq!(response.status(), 416);
    assert_eq!(response.headers()["content-range"], "bytes */10");
}

#[tokio::test]
async fn bad_inputs_get_clear_answers() {
    let tree = TestTree::new("browse-bad");
    tree.write(&tree.host().join("dir/file"), "x");
    std::os::unix::fs::symlink("/etc", tree.host().join("escape")).unwrap();
    let agent = agent(&tree);
    let cases = [
        ("/v2/browse/ls", 400, "Invalid query parameter: path"),
        ("/v2/browse/ls?path=", 400, "Invalid query parameter: path"),
        ("/v2/browse/ls?path=/host/../etc", 400, "Invalid host path"),
        ("/v2/browse/ls?path=%2e%2e%2fetc", 400, "Invalid host path"),
        ("/v2/browse/ls?volumeID=..&path=/", 400, "Invalid volume"),
        ("/v2/browse/ls?volumeID=a%2Fb&path=/", 400, "Invalid volume"),
        (
            "/v2/browse/ls?path=/host/nope",
            404,
            "Unable to list files inside specified directory",
        ),
        (
            "/v2/browse/ls?path=/host/escape",
            403,
            "Access to this path is not allowed",
        ),
        (
            "/v2/browse/get?path=/host/escape/passwd",
            403,
            "Access to this path is not allowed",
        ),
    ];
    for (uri, status, message) in cases {
        let (response, body) = call(&agent, "GET", uri, &[], "").await;
        assert_eq!(response.status(), status, "{uri}");
        assert_eq!(json(&body)["message"], message, "{uri}");
    }
    let (response, body) = call(
        &agent,
        "DELETE",
        "/v2/browse/delete?path=/host/dir",
        &[],
        "",
    )
    .await;
    assert_eq!(
        response.status(),
        409,
        "a folder with a file is not deleted"
    );
    assert!(json(&body)["details"]
        .as_str()
        .unwrap()
        .contains("not empty"));
    assert!(tree.host().join("dir/file").exists());
    let (response, _) = call(&agent, "POST", "/v2/browse/ls?path=/host", &[], "").await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn deletes_and_renames() {
    let tree = TestTree::new("browse-change");
    tree.write(&tree.host().join("a.txt"), "a");
    let agent = agent(&tree);
    let rename = r#"{"CurrentFilePath":"/host/a.txt","NewFilePath":"/host/b.txt"}"#;
    let (response, _) = call(&agent, "PUT", "/v2/browse/rename", &[], rename).await;
    assert_eq!(response.status(), 204);
    assert!(tree.host().join("b.txt").exists() && !tree.host().join("a.txt").exists());
    for (payload, details) in [
        (
            r#"{"NewFilePath":"/host/c"}"#,
            "Current file path is invalid",
        ),
        (
            r#"{"CurrentFilePath":"/host/b.txt"}"#,
            "New file path is invalid",
        ),
        ("not json", "Expected ident"),
    ] {
        let (response, body) = call(&agent, "PUT", "/v2/browse/rename", &[], payload).await;
        assert_eq!(response.status(), 400, "{payload}");
        assert_eq!(json(&body)["message"], "Invalid request payload");
        assert!(
            json(&body)["details"]
                .as_str()
                .unwrap()
                .starts_with(details),
            "{payload}: {}",
            json(&body)
        );
    }
    let (response, _) = call(
        &agent,
        "DELETE",
        "/v2/browse/delete?path=/host/b.txt",
        &[],
        "",
    )
    .await;
    assert_eq!(response.status(), 204);
    assert!(!tree.host().join("b.txt").exists());
}

const BOUNDARY: &str = "berth-test-boundary";

/// A multipart body with the given parts, in order: `(name, file name, content)`.
fn multipart(parts: &[(&str, Option<&str>, &str)]) -> String {
    let mut body = String::new();
    for (name, file_name, content) in parts {
        body.push_str(&format!("--{BOUNDARY}\r\n"));
        match file_name {
            Some(file) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )),
            None => body.push_str(&format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n")),
        }
        body.push_str(content);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body
}

async fn upload(agent: &TestAgent, uri: &str, body: &str) -> (Response<()>, serde_json::Value) {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let (response, bytes) =
        call(agent, "POST", uri, &[("content-type", &content_type)], body).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (response, json)
}

fn leftovers(folder: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".berth-"))
        .collect()
}

#[tokio::test]
async fn uploads_land_in_place_in_either_field_order() {
    let tree = TestTree::new("browse-put");
    std::fs::create_dir_all(tree.host().join("uploads")).unwrap();
    tree.write(&tree.volume_data("data").join("old.txt"), "old contents");
    let agent = agent(&tree);

    let path_first = multipart(&[
        ("Path", None, "/host/uploads"),
        ("file", Some("a.txt"), "first order"),
    ]);
    let (response, json) = upload(&agent, "/v2/browse/put", &path_first).await;
    assert_eq!(response.status(), 204, "{json}");
    assert_eq!(
        std::fs::read_to_string(tree.host().join("uploads/a.txt")).unwrap(),
        "first order"
    );

    // Portainer sends the file before its folder.
    let file_first = multipart(&[
        ("file", Some("b.txt"), "second order"),
        ("Path", None, "/host/uploads"),
    ]);
    let (response, json) = upload(&agent, "/v2/browse/put", &file_first).await;
    assert_eq!(response.status(), 204, "{json}");
    assert_eq!(
        std::fs::read_to_string(tree.host().join("uploads/b.txt")).unwrap(),
        "second order"
    );

    let replace = multipart(&[
        ("Path", None, "/"),
        ("file", Some("old.txt"), "new contents"),
    ]);
    let (response, _) = upload(&agent, "/v2/browse/put?volumeID=data", &replace).await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        std::fs::read_to_string(tree.volume_data("data").join("old.txt")).unwrap(),
        "new contents"
    );

    assert!(
        leftovers(&tree.host()).is_empty() && leftovers(&tree.host().join("uploads")).is_empty()
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let tree = TestTree::new("browse-put-bad");
    let outside = tree.base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, tree.host().join("escape")).unwrap();
    let agent = agent(&tree);
    let cases = [
        (
            multipart(&[("Path", None, "/host")]),
            400,
            "Http: no such file",
        ),
        (
            multipart(&[("file", Some("x.txt"), "x")]),
            400,
            "Invalid file path",
        ),
        (
            multipart(&[("Path", None, "/host"), ("file", Some("../x.txt"), "x")]),
            400,
            "Invalid path. Ensure that the path do not contain '..' elements",
        ),
        (
            multipart(&[("Path", None, "/host"), ("file", Some("a/b.txt"), "x")]),
            400,
            "Invalid file name",
        ),
        (
            multipart(&[("Path", None, "/host/../etc"), ("file", Some("x.txt"), "x")]),
            400,
            "The host path \"/host/../etc\" leaves the host root: '..' is not allowed",
        ),
        (
            multipart(&[
                ("Path", None, "/host/escape/new"),
                ("file", Some("x.txt"), "x"),
            ]),
            403,
            "",
        ),
        (
            multipart(&[("Path", None, "/host/escape"), ("file", Some("x.txt"), "x")]),
            403,
            "",
        ),
        (
            multipart(&[("file", Some("x.txt"), "x"), ("Path", None, "/host/escape")]),
            403,
            "",
        ),
        ("not multipart at all".to_string(), 400, ""),
    ];
    for (body, status, details) in cases {
        let (response, json) = upload(&agent, "/v2/browse/put", &body).await;
        assert_eq!(response.status(), status, "{body}: {json}");
        if !details.is_empty() {
            assert_eq!(json["details"], details, "{body}");
        }
    }
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written outside"
    );
    assert!(
        leftovers(&tree.host()).is_empty(),
        "{:?}",
        leftovers(&tree.host())
    );
}

/// Missing folders are made (beneath the root, as every path is), as the
/// Go agent makes them; a replaced file keeps its mode and owner, and
/// shorter content leaves nothing of the old tail (the Go agent's does).
#[tokio::test]
async fn uploads_make_folders_and_replace_files_keeping_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tree = TestTree::new("browse-put-keep");
    let agent = agent(&tree);
    for (order, parts) in [
        (
            "path first",
            [
                ("Path", None, "/host/new/deeper"),
                ("file", Some("a.txt"), "made"),
            ],
        ),
        (
            "file first",
            [
                ("file", Some("b.txt"), "made"),
                ("Path", None, "/host/other/deeper"),
            ],
        ),
    ] {
        let (response, json) = upload(&agent, "/v2/browse/put", &multipart(&parts)).await;
        assert_eq!(response.status(), 204, "{order}: {json}");
    }
    assert_eq!(
        std::fs::read_to_string(tree.host().join("new/deeper/a.txt")).unwrap(),
        "made"
    );
    assert_eq!(
        std::fs::read_to_string(tree.host().join("other/deeper/b.txt")).unwrap(),
        "made"
    );

    let root = nix_is_root();
    for (order, name) in [("path first", "kept-a.conf"), ("file first", "kept-b.conf")] {
        let file = tree.host().join("etc").join(name);
        tree.write(&file, "a long old content with a tail");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        if root {
            std::os::unix::fs::chown(&file, Some(1234), Some(2345)).unwrap();
        }
        let parts = if order == "path first" {
            multipart(&[("Path", None, "/host/etc"), ("file", Some(name), "short")])
        } else {
            multipart(&[("file", Some(name), "short"), ("Path", None, "/host/etc")])
        };
        let (response, json) = upload(&agent, "/v2/browse/put", &parts).await;
        assert_eq!(response.status(), 204, "{order}: {json}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "short", "{order}");
        let metadata = std::fs::metadata(&file).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640, "{order}: the mode is kept");
        if root {
            assert_eq!(
                (metadata.uid(), metadata.gid()),
                (1234, 2345),
                "{order}: the owner is kept"
            );
        }
    }
    assert!(leftovers(&tree.host()).is_empty());
    assert!(leftovers(&tree.host().join("etc")).is_empty());
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// An upload whose connection breaks mid-file leaves no partial file and
/// keeps the old one.
#[tokio::test]
async fn an_interrupted_upload_leaves_the_old_file_alone() {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let tree = TestTree::new("browse-put-broken");
    tree.write(&tree.host().join("keep.txt"), "precious");
    let agent = agent(&tree);
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"Path\"\r\n\r\n/host\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"keep.txt\"\r\n\r\nhalf of the new"
    );
    let frames: Vec<Result<Frame<Bytes>, berth_ports::BoxError>> = vec![
        Ok(Frame::data(Bytes::from(head))),
        Err("connection reset by peer".into()),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    let mut request = Request::post("/v2/browse/put").body(body).unwrap();
    portainer_identity().apply(request.headers_mut());
    request.headers_mut().insert(
        "content-type",
        format!("multipart/form-data; boundary={BOUNDARY}")
            .parse()
            .unwrap(),
    );
    let response = agent.handle(request, "127.0.0.1:1".parse().unwrap()).await;
    assert!(response.status().is_client_error() || response.status().is_server_error());
    assert_eq!(
        std::fs::read_to_string(tree.host().join("keep.txt")).unwrap(),
        "precious"
    );
    assert!(
        leftovers(&tree.host()).is_empty(),
        "{:?}",
        leftovers(&tree.host())
    );
}

/// Every combination of hostile path segments, through every operation:
/// nothing outside the root is read, written, renamed or deleted.
#[tokio::test]
async fn hostile_paths_never_reach_outside() {
    let tree = TestTree::new("browse-hostile");
    let outside = tree.base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "sentinel").unwrap();
    std::os::unix::fs::symlink(&outside, tree.host().join("escape")).unwrap();
    std::os::unix::fs::symlink("loop", tree.host().join("loop")).unwrap();
    std::fs::write(tree.host().join("a"), "inside").unwrap();
    let agent = agent(&tree);

    let long = "n".repeat(300);
    let segments = [
        "..",
        ".",
        "",
        "%2e%2e",
        "%00",
        "escape",
        "loop",
        "a",
        "%C3%A9t%C3%A9",
        long.as_str(),
        "secret",
    ];
    let mut paths = Vec::new();
    for first in segments {
        paths.push(format!("/host/{first}"));
        for second in segments {
            paths.push(format!("/host/{first}/{second}"));
            for third in ["..", "escape", "secret", "loop"] {
                paths.push(format!("/host/{first}/{second}/{third}"));
            }
        }
    }
    let mut requests = 0;
    let reset = || {
        // Renames and deletes inside the root are allowed: put the fixture back.
        let escape = tree.host().join("escape");
        if std::fs::symlink_metadata(&escape).is_ok_and(|m| !m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&escape).or_else(|_| std::fs::remove_dir_all(&escape));
        }
        if std::fs::symlink_metadata(&escape).is_err() {
            std::os::unix::fs::symlink(&outside, &escape).unwrap();
        }
        let _ = std::fs::write(tree.host().join("a"), "inside");
    };
    for path in &paths {
        reset();
        for (method, op) in [("GET", "ls"), ("GET", "get"), ("DELETE", "delete")] {
            let (response, _) = call(
                &agent,
                method,
                &format!("/v2/browse/{op}?path={path}"),
                &[],
                "",
            )
            .await;
            // Reading through the escaping link is always refused.
            let confined = berth_domain::browse::query_value(Some(&format!("path={path}")), "path")
                .and_then(|decoded| berth_domain::browse::confine_host_path(&decoded).ok());
            let through_link = confined.as_ref().is_some_and(|c| {
                let parts = c.components();
                // Deleting the link itself is allowed: it is inside the root.
                parts.first().is_some_and(|p| p == "escape")
                    && !(parts.len() == 1 && op == "delete")
            });
            if through_link {
                assert!(
                    !response.status().is_success(),
                    "{op} {path} answered {}",
                    response.status()
                );
            }
            requests += 1;
        }
        let rename = json!({"CurrentFilePath": path, "NewFilePath": "/host/moved"}).to_string();
        call(&agent, "PUT", "/v2/browse/rename", &[], &rename).await;
        let rename_out = json!({"CurrentFilePath": "/host/a", "NewFilePath": path}).to_string();
        call(&agent, "PUT", "/v2/browse/rename", &[], &rename_out).await;
        let decoded = path.replace("%2e%2e", "..").replace("%00", "\0");
        let upload_body = multipart(&[("Path", None, &decoded), ("file", Some("planted"), "x")]);
        upload(&agent, "/v2/browse/put", &upload_body).await;
        requests += 3;
    }
    let outside_now: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        outside_now,
        ["secret"],
        "nothing created, renamed or deleted outside"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "sentinel"
    );
    eprintln!(
        "confinement: {} paths, {requests} requests, nothing outside touched",
        paths.len()
    );
}
