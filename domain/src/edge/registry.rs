//! Private registries for Edge stacks (reference §10.7, §10.11): the
//! credentials a stack payload carries, which of them answers the docker
//! credential helper's question, which registry an image names, and the
//! credential helper's protocol (docker-credential-helpers) as a read-only
//! store.

use serde_json::{json, Value};

use super::status::field;

/// One registry's credentials, as a stack payload's
/// `RegistryCredentials` lists them.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    pub server_url: String,
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for RegistryCredential {
    // A secret never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("server_url", &self.server_url)
            .field("username", &self.username)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl RegistryCredential {
    /// The helper's and the lookup's answer:
    /// `{"ServerURL","Username","Secret"}`.
    pub fn to_json(&self) -> Value {
        json!({"ServerURL": self.server_url, "Username": self.username, "Secret": self.secret})
    }
}

/// A payload's `RegistryCredentials` (field names in any case); entries
/// without a server are skipped.
pub fn parse_registry_credentials(
    payload: &serde_json::Map<String, Value>,
) -> Vec<RegistryCredential> {
    field(payload, "RegistryCredentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|entry| {
            let text = |name| {
                field(entry, name)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let server_url = text("ServerURL");
            (!server_url.is_empty()).then(|| RegistryCredential {
                server_url,
                username: text("Username"),
                secret: text("Secret"),
            })
        })
        .collect()
}

/// The key a lookup's `serverurl` is matched on, as the Go agent makes
/// it: the value itself, or, when it starts with `http`, its host (any
/// host ending in `docker.io` is `docker.io`).
pub fn lookup_key(server_url: &str) -> String {
    if !server_url.starts_with("http") {
        return server_url.to_string();
    }
    let rest = server_url
        .split_once("://")
        .map_or(server_url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    if host.ends_with("docker.io") {
        "docker.io".to_string()
    } else {
        host.to_string()
    }
}

/// The credential answering a lookup of `server_url`, if any.
pub fn lookup<'a>(
    credentials: &'a [RegistryCredential],
    server_url: &str,
) -> Option<&'a RegistryCredential> {
    if server_url.is_empty() {
        return None;
    }
    let key = lookup_key(server_url);
    credentials.iter().find(|c| c.server_url == key)
}

/// The registry an image reference names, as the docker CLI reads it: the
/// first path segment when it has a `.` or a `:` or is `localhost`, else
/// Docker Hub (`docker.io`). The Go agent's updater rewrite only looks for
/// a `.`, so it misses `localhost:5000/…`.
pub fn registry_of_image(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The lookup's request target for `server_url`, percent-encoded (the Go
/// helper sends it raw, so a URL with `&` or `#` in it is cut short).
pub fn lookup_target(server_url: &str) -> String {
    let mut target = String::from("/lookup?serverurl=");
    for byte in server_url.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            target.push(byte as char);
        } else {
            target.push_str(&format!("%{byte:02X}"));
        }
    }
    target
}

/// The lookup's answer: credentials on `200` with their JSON, nothing
/// otherwise.
pub fn parse_lookup_answer(status: u16, body: &[u8]) -> Option<RegistryCredential> {
    if status != 200 {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let text = |name| {
        field(object, name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(RegistryCredential {
        server_url: text("ServerURL")?,
        username: text("Username").unwrap_or_default(),
        secret: text("Secret").unwrap_or_default(),
    })
}

/// What docker-credential-helpers' callers expect when a helper has no
/// credentials for a server: this exact text on stdout, and exit 1.
pub const NOT_FOUND: &str = "credentials not found in native keychain";
/// The text for a `get` without a server URL.
pub const MISSING_SERVER_URL: &str = "no credentials server URL";

/// A credential helper action, as the docker CLI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperAction {
    Get,
    Store,
    Erase,
    List,
    Version,
}

impl HelperAction {
    pub fn parse(word: &str) -> Option<HelperAction> {
        Some(match word {
            "get" => HelperAction::Get,
            "store" => HelperAction::Store,
            "erase" => HelperAction::Erase,
            "list" => HelperAction::List,
            "version" => HelperAction::Version,
            _ => return None,
        })
    }
}

/// What the helper prints and whether it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperOutput {
    pub stdout: String,
    pub success: bool,
}

impl HelperOutput {
    fn ok(stdout: impl Into<String>) -> Self {
        HelperOutput {
            stdout: stdout.into(),
            success: true,
        }
    }

    fn fail(stdout: impl Into<String>) -> Self {
        HelperOutput {
            stdout: stdout.into(),
            success: false,
        }
    }
}

/// The read-only helper's answer to `action`, given what it read on stdin
/// and, for `get`, what the lookup found (`None`: nothing).
///
/// `store` and `erase` succeed without keeping anything (Portainer sends
/// credentials with each stack; `docker login` on the host must not fail
/// because of the helper), `list` is empty.
pub fn helper_answer(
    action: HelperAction,
    found: Option<&RegistryCredential>,
    version: &str,
) -> HelperOutput {
    match action {
        HelperAction::Get => match found {
            Some(credential) => HelperOutput::ok(credential.to_json().to_string()),
            None => HelperOutput::fail(NOT_FOUND),
        },
        HelperAction::Store | HelperAction::Erase => HelperOutput::ok(""),
        HelperAction::List => HelperOutput::ok("{}"),
        HelperAction::Version => {
            HelperOutput::ok(format!("docker-credential-portainer (berth) {version}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(server: &str) -> RegistryCredential {
        RegistryCredential {
            server_url: server.into(),
            username: "u".into(),
            secret: "s".into(),
        }
    }

    #[test]
    fn credentials_come_from_the_payload_in_any_case() {
        let payload = json!({"registryCredentials": [
            {"serverURL": "127.0.0.1:5000", "username": "alice", "secret": "pw"},
            {"ServerURL": "", "Username": "nobody"},
            "not an object"
        ]});
        let list = parse_registry_credentials(payload.as_object().unwrap());
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].server_url, "127.0.0.1:5000");
        assert_eq!(list[0].username, "alice");
        assert_eq!(list[0].secret, "pw");
        assert!(
            !format!("{:?}", list[0]).contains("pw"),
            "secrets stay out of logs"
        );
    }

    #[test]
    fn lookups_match_as_the_go_agent_matches() {
        assert_eq!(lookup_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(lookup_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(lookup_key("https://registry-1.docker.io"), "docker.io");
        assert_eq!(
            lookup_key("http://registry.example.com:5000/v2/"),
            "registry.example.com"
        );
        assert_eq!(lookup_key("https://user@[::1]:5000/"), "::1");
        let list = [credential("docker.io"), credential("127.0.0.1:5000")];
        assert_eq!(
            lookup(&list, "https://index.docker.io/v1/")
                .unwrap()
                .server_url,
            "docker.io"
        );
        assert_eq!(
            lookup(&list, "127.0.0.1:5000").unwrap().server_url,
            "127.0.0.1:5000"
        );
        assert!(lookup(&list, "127.0.0.1:5001").is_none());
        assert!(lookup(&list, "").is_none());
    }

    #[test]
    fn images_name_their_registry_as_docker_reads_them() {
        assert_eq!(registry_of_image("busybox"), "docker.io");
        assert_eq!(registry_of_image("portainer/agent:2.23"), "docker.io");
        assert_eq!(registry_of_image("example.com/team/app:1"), "example.com");
        assert_eq!(registry_of_image("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_of_image("localhost/app"), "localhost");
        assert_eq!(registry_of_image("127.0.0.1:5000/app"), "127.0.0.1:5000");
    }

    #[test]
    fn the_lookup_request_and_answer() {
        assert_eq!(
            lookup_target("https://index.docker.io/v1/?a=b&c"),
            "/lookup?serverurl=https%3A%2F%2Findex.docker.io%2Fv1%2F%3Fa%3Db%26c"
        );
        let found = parse_lookup_answer(
            200,
            br#"{"ServerURL":"127.0.0.1:5000","Username":"u","Secret":"s"}"#,
        )
        .unwrap();
        assert_eq!(found.username, "u");
        assert!(parse_lookup_answer(204, b"").is_none());
        assert!(parse_lookup_answer(200, b"not json").is_none());
        assert!(parse_lookup_answer(200, b"{}").is_none());
    }

    #[test]
    fn the_helper_answers_as_a_read_only_store() {
        let found = credential("127.0.0.1:5000");
        let get = helper_answer(HelperAction::Get, Some(&found), "1");
        assert!(get.success);
        let printed: Value = serde_json::from_str(&get.stdout).unwrap();
        assert_eq!(printed["ServerURL"], "127.0.0.1:5000");
        assert_eq!(printed["Secret"], "s");
        let missing = helper_answer(HelperAction::Get, None, "1");
        assert_eq!(missing, HelperOutput::fail(NOT_FOUND));
        assert!(helper_answer(HelperAction::Store, None, "1").success);
        assert!(helper_answer(HelperAction::Erase, None, "1").success);
        assert_eq!(helper_answer(HelperAction::List, None, "1").stdout, "{}");
        assert_eq!(HelperAction::parse("get"), Some(HelperAction::Get));
        assert_eq!(HelperAction::parse("steal"), None);
    }
}
