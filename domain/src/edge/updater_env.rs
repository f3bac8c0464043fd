//! Portainer's agent-update stacks (`EdgeUpdateID > 0`) run a service
//! called `updater` that pulls the new agent image itself; it is given
//! the registry credentials for that image as environment variables
//! (reference §10.7). Unlike the Go agent, which re-encodes the file from
//! five known keys and drops the rest, every other key is kept.

use yaml_serde::{Mapping, Value};

use super::registry::{registry_of_image, RegistryCredential};

const SERVICE: &str = "updater";

/// The entry file with the updater's credentials added, or `None` when
/// nothing changes: no `updater` service, no credential for its image's
/// registry, or a file that is not YAML (compose's validation says why).
pub fn with_updater_credentials(
    compose: &str,
    credentials: &[RegistryCredential],
) -> Option<String> {
    let mut document: Value = yaml_serde::from_str(compose).ok()?;
    let service = document
        .get_mut("services")?
        .as_mapping_mut()?
        .get_mut(SERVICE)?
        .as_mapping_mut()?;
    let image = service.get("image").and_then(Value::as_str).unwrap_or("");
    let registry = registry_of_image(image);
    let credential = credentials.iter().find(|c| c.server_url == registry)?;
    let added = [
        ("REGISTRY_USED", "1"),
        ("REGISTRY_USERNAME", credential.username.as_str()),
        ("REGISTRY_PASSWORD", credential.secret.as_str()),
    ];
    let environment = service
        .entry(Value::from("environment"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    match environment {
        Value::Sequence(list) => {
            list.retain(|entry| {
                let name = entry.as_str().unwrap_or("").split('=').next().unwrap_or("");
                !added.iter().any(|(key, _)| *key == name)
            });
            list.extend(added.iter().map(|(k, v)| Value::from(format!("{k}={v}"))));
        }
        Value::Mapping(map) => {
            for (key, value) in added {
                map.insert(Value::from(key), Value::from(value));
            }
        }
        other => {
            let mut map = Mapping::new();
            for (key, value) in added {
                map.insert(Value::from(key), Value::from(value));
            }
            *other = Value::Mapping(map);
        }
    }
    yaml_serde::to_string(&document).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Vec<RegistryCredential> {
        vec![
            RegistryCredential {
                server_url: "docker.io".into(),
                username: "hub".into(),
                secret: "hub-secret".into(),
            },
            RegistryCredential {
                server_url: "localhost:5000".into(),
                username: "local".into(),
                secret: "local-secret".into(),
            },
        ]
    }

    fn environment(text: &str) -> Value {
        let document: Value = yaml_serde::from_str(text).unwrap();
        document["services"]["updater"]["environment"].clone()
    }

    #[test]
    fn the_updater_gets_the_credentials_of_its_images_registry() {
        let compose = "services:\n  updater:\n    image: localhost:5000/portainer/portainer-updater:latest\n    \
            environment:\n      - KEEP=1\n      - REGISTRY_USED=0\n    labels:\n      - io.portainer.updater=true\n    \
            restart: 'no'\n  other:\n    image: busybox\n";
        let rewritten = with_updater_credentials(compose, &credentials()).unwrap();
        let env = environment(&rewritten);
        let entries: Vec<&str> = env
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            entries,
            [
                "KEEP=1",
                "REGISTRY_USED=1",
                "REGISTRY_USERNAME=local",
                "REGISTRY_PASSWORD=local-secret"
            ]
        );
        let document: Value = yaml_serde::from_str(&rewritten).unwrap();
        assert_eq!(
            document["services"]["updater"]["restart"], "no",
            "other keys kept"
        );
        assert_eq!(document["services"]["other"]["image"], "busybox");
    }

    #[test]
    fn a_mapping_environment_and_docker_hub_images_work_too() {
        let compose = "version: '3'\nservices:\n  updater:\n    image: portainer/portainer-updater\n    environment:\n      KEEP: 1\n";
        let env = environment(&with_updater_credentials(compose, &credentials()).unwrap());
        assert_eq!(env["KEEP"], 1);
        assert_eq!(env["REGISTRY_USERNAME"], "hub");
        assert_eq!(env["REGISTRY_PASSWORD"], "hub-secret");
        let no_environment = "services:\n  updater:\n    image: portainer/portainer-updater\n";
        let env = environment(&with_updater_credentials(no_environment, &credentials()).unwrap());
        assert_eq!(env.as_sequence().unwrap().len(), 3);
    }

    #[test]
    fn nothing_changes_without_an_updater_or_a_matching_credential() {
        let other = "services:\n  web:\n    image: busybox\n";
        assert!(with_updater_credentials(other, &credentials()).is_none());
        let elsewhere = "services:\n  updater:\n    image: quay.io/portainer/updater\n";
        assert!(with_updater_credentials(elsewhere, &credentials()).is_none());
        assert!(with_updater_credentials("{not yaml", &credentials()).is_none());
        assert!(with_updater_credentials("services:\n  updater:\n    image: x\n", &[]).is_none());
    }
}
