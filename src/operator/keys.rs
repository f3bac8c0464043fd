//! `berth keys new`: a key pair and the docker CLI configuration that signs
//! every request with it, so the docker CLI (and docker-py, which reads the
//! same `config.json`) can talk to berth without openssl.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use berth_domain::edge::credentials::Zeroizing;
use berth_domain::signature::signing::{self, KeyKind};
use berth_domain::signature::DEFAULT_MESSAGE;

/// The private key's file: not `key.pem`, which the docker CLI would take
/// for a TLS client key.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";

/// What `berth keys new` writes.
#[derive(Debug)]
pub struct NewKeys {
    pub dir: PathBuf,
    pub public_key_hex: String,
    /// Whether the signature is over `AGENT_SECRET` (secret mode).
    pub over_secret: bool,
}

/// Makes a key pair in `dir` and writes `config.json` (its `HttpHeaders`
/// merged into one already there), `signing-key.pem` (0600) and, when
/// missing, a placeholder `ca.pem`.
///
/// # Errors
/// A signing key already in `dir` (never overwritten), a `config.json`
/// that is not a JSON object, or a file that cannot be written.
pub fn new_keys(dir: &Path, kind: KeyKind, secret: Option<&str>) -> Result<NewKeys, String> {
    let key_path = dir.join(SIGNING_KEY_FILE);
    if key_path.exists() {
        return Err(format!(
            "{} already exists: berth keys new never replaces a key; choose another folder",
            key_path.display()
        ));
    }
    let config_path = dir.join("config.json");
    let mut config = read_config(&config_path)?;
    let message = secret.unwrap_or(DEFAULT_MESSAGE);
    let signed = loop {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(secret.as_mut())
            .map_err(|error| format!("no randomness from the system: {error}"))?;
        // A P-256 draw outside the curve's order (odds about 2⁻³²) is drawn again.
        if let Ok(signed) = signing::sign(kind, &secret, message.as_bytes()) {
            break signed;
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    write_new(&key_path, signed.private_key_pem.as_bytes(), 0o600)?;
    let headers = config
        .entry("HttpHeaders")
        .or_insert_with(|| serde_json::json!({}));
    let Some(headers) = headers.as_object_mut() else {
        return Err(format!(
            "{}: HttpHeaders is not an object",
            config_path.display()
        ));
    };
    headers.insert(
        "X-PortainerAgent-PublicKey".into(),
        signed.public_key_hex.clone().into(),
    );
    headers.insert(
        "X-PortainerAgent-Signature".into(),
        signed.signature.clone().into(),
    );
    let text = serde_json::to_string_pretty(&config).map_err(|error| error.to_string())?;
    write_replacing(&config_path, format!("{text}\n").as_bytes(), 0o600)?;
    let ca_path = dir.join("ca.pem");
    if !ca_path.exists() {
        let pem = berth_adapters::http::tls::placeholder_ca_pem().map_err(|e| e.to_string())?;
        write_replacing(&ca_path, pem.as_bytes(), 0o644)?;
    }
    Ok(NewKeys {
        dir: dir.to_path_buf(),
        public_key_hex: signed.public_key_hex,
        over_secret: secret.is_some(),
    })
}

/// What the command prints: the files, how to use them, and the pairing
/// warning.
pub fn report(keys: &NewKeys) -> String {
    let dir = keys.dir.display();
    let mode = if keys.over_secret {
        "signed over AGENT_SECRET: agents started with the same AGENT_SECRET accept it"
    } else {
        "signed as Portainer signs (no AGENT_SECRET)"
    };
    format!(
        "wrote {dir}/config.json (the signature headers), {dir}/{SIGNING_KEY_FILE} (the private key, 0600) and {dir}/ca.pem\n\
         public key: {key}\n\
         {mode}\n\
         \n\
         use it with:\n  DOCKER_CONFIG={dir} DOCKER_CERT_PATH={dir} docker -H tcp://HOST:9001 --tls ps\n\
         \n\
         warning: an agent without AGENT_SECRET pairs with the first key that signs a request to it\n\
         and refuses every other key until it restarts. Use this key only with agents in secret mode\n\
         or agents that Portainer does not use, or Portainer will be locked out.\n",
        key = keys.public_key_hex,
    )
}

/// `berth keys client-cert`: a client certificate from the agent's
/// `SSL_CACERT` CA, written as the docker CLI and docker-py read them from
/// `DOCKER_CERT_PATH`: `cert.pem`, `key.pem` (0600) and the CA as `ca.pem`.
///
/// # Errors
/// A `key.pem` already in `dir` (never overwritten), or what issuing
/// refuses (see `issue_client_certificate`).
pub fn client_certificate(
    dir: &Path,
    ca_cert: &str,
    ca_key: &str,
    name: &str,
) -> Result<String, String> {
    let key_path = dir.join("key.pem");
    if key_path.exists() {
        return Err(format!(
            "{} already exists: berth keys client-cert never replaces a key; choose another folder",
            key_path.display()
        ));
    }
    let issued = berth_adapters::http::tls::issue_client_certificate(ca_cert, ca_key, name)
        .map_err(|error| error.to_string())?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    write_new(&key_path, issued.key_pem.as_bytes(), 0o600)?;
    write_replacing(
        &dir.join("cert.pem"),
        issued.certificate_pem.as_bytes(),
        0o644,
    )?;
    write_replacing(&dir.join("ca.pem"), issued.ca_pem.as_bytes(), 0o644)?;
    let dir = dir.display();
    Ok(format!(
        "wrote {dir}/cert.pem (a client certificate for {name:?}, valid for a year), {dir}/key.pem (0600) and {dir}/ca.pem\n\
         an agent started with SSL_CACERT={ca_cert} and AGENT_CLIENT_CERT_AUTH=1 takes it instead of a signature:\n  \
         DOCKER_CERT_PATH={dir} docker -H tcp://HOST:9001 --tlsverify ps\n\
         (--tlsverify checks the agent's certificate against the same CA: start the agent with an SSL_CERT it issued)\n",
    ))
}

fn read_config(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(format!(
                "{} is not a JSON object; fix or move it first",
                path.display()
            )),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Map::new()),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    file.write_all(bytes)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let temporary = path.with_extension("berth-new");
    let _ = std::fs::remove_file(&temporary);
    write_new(&temporary, bytes, mode)?;
    std::fs::rename(&temporary, path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::signature::{decode_signature, parse_public_key};
    use std::os::unix::fs::PermissionsExt as _;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn headers(dir: &Path) -> (String, String) {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let headers = &config["HttpHeaders"];
        (
            headers["X-PortainerAgent-PublicKey"]
                .as_str()
                .unwrap()
                .into(),
            headers["X-PortainerAgent-Signature"]
                .as_str()
                .unwrap()
                .into(),
        )
    }

    #[test]
    fn the_written_headers_verify_over_the_secret_or_portainers_message() {
        for (kind, secret) in [(KeyKind::P256, None), (KeyKind::Ed25519, Some("s3cret"))] {
            let dir = temp(&format!("{kind:?}"));
            let made = new_keys(&dir, kind, secret).unwrap();
            let (key, signature) = headers(&dir);
            assert_eq!(key, made.public_key_hex);
            let (key, _) = parse_public_key(&key).unwrap();
            let message = secret.unwrap_or(DEFAULT_MESSAGE);
            assert!(key.verifies(&decode_signature(&signature).unwrap(), message.as_bytes()));
            let mode = std::fs::metadata(dir.join(SIGNING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(std::fs::read_to_string(dir.join("ca.pem"))
                .unwrap()
                .contains("CERTIFICATE"));
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn an_existing_config_keeps_its_other_settings_and_a_key_is_never_replaced() {
        let dir = temp("merge");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths":{"r.example":{}},"HttpHeaders":{"X-Other":"1"}}"#,
        )
        .unwrap();
        new_keys(&dir, KeyKind::P256, None).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert!(config["auths"]["r.example"].is_object());
        assert_eq!(config["HttpHeaders"]["X-Other"], "1");
        let before = std::fs::read(dir.join(SIGNING_KEY_FILE)).unwrap();
        let again = new_keys(&dir, KeyKind::P256, None).unwrap_err();
        assert!(again.contains("never replaces"), "{again}");
        assert_eq!(std::fs::read(dir.join(SIGNING_KEY_FILE)).unwrap(), before);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_config_that_is_not_an_object_is_left_as_it_is() {
        let dir = temp("bad");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "[1,2]").unwrap();
        let error = new_keys(&dir, KeyKind::P256, None).unwrap_err();
        assert!(error.contains("not a JSON object"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.join("config.json")).unwrap(),
            "[1,2]"
        );
        assert!(!dir.join(SIGNING_KEY_FILE).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
