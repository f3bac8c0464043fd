//! Merging the answers of every node into one cluster-wide list
//! (reference §5.3), keeping Docker's format and saying which nodes are
//! missing and why, instead of dropping them silently.

use serde_json::{Map, Value};

use crate::routing::ListKind;

/// What one node gave back.
#[derive(Debug, Clone)]
pub enum NodeAnswer {
    Answered {
        status: u16,
        body: Vec<u8>,
    },
    /// No answer: transport error, timeout, or gossip says the node failed.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct NodeResult {
    pub node: String,
    pub answer: NodeAnswer,
}

/// The merged list and the nodes that are not in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub body: Value,
    pub failures: Vec<(String, String)>,
}

impl Merged {
    /// `node (why); node (why)`, for a response header.
    pub fn failure_summary(&self) -> Option<String> {
        (!self.failures.is_empty()).then(|| {
            self.failures
                .iter()
                .map(|(node, why)| format!("{node} ({})", why.replace([';', '\r', '\n'], " ")))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Merges node answers in the order given. Each object gets
/// `"Portainer":{"Agent":{"NodeName":…}}`.
pub fn merge(kind: ListKind, results: Vec<NodeResult>) -> Merged {
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    let mut failures = Vec::new();
    for NodeResult { node, answer } in results {
        match objects_of(kind, answer) {
            Ok((objects, node_warnings)) => {
                items.extend(
                    objects
                        .into_iter()
                        .map(|object| tag_with_node(object, &node)),
                );
                warnings.extend(node_warnings);
            }
            Err(why) => failures.push((node, why)),
        }
    }
    let body = match kind {
        ListKind::Volumes => {
            let mut object = Map::new();
            object.insert("Volumes".into(), Value::Array(items));
            object.insert("Warnings".into(), Value::Array(warnings));
            Value::Object(object)
        }
        _ => Value::Array(items),
    };
    Merged { body, failures }
}

type Objects = (Vec<Map<String, Value>>, Vec<Value>);

fn objects_of(kind: ListKind, answer: NodeAnswer) -> Result<Objects, String> {
    let (status, body) = match answer {
        NodeAnswer::Answered { status, body } => (status, body),
        NodeAnswer::Failed(why) => return Err(why),
    };
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| format!("HTTP {status} with a body that is not JSON: {error}"))?;
    if let Some(message) = value.get("message").filter(|m| !m.is_null()) {
        let message = message
            .as_str()
            .map_or_else(|| message.to_string(), str::to_string);
        return Err(format!("HTTP {status}: {message}"));
    }
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    let (list, warnings) = match (kind, value) {
        (ListKind::Volumes, Value::Object(mut object)) => {
            let warnings = match object.remove("Warnings") {
                Some(Value::Array(warnings)) => warnings,
                _ => Vec::new(),
            };
            match object.remove("Volumes") {
                Some(Value::Array(volumes)) => (volumes, warnings),
                Some(Value::Null) | None => (Vec::new(), warnings),
                Some(_) => {
                    return Err("invalid response from Docker daemon: Volumes is not a list".into())
                }
            }
        }
        (ListKind::Volumes, _) => {
            return Err("invalid response from Docker daemon: not an object".into())
        }
        (_, Value::Array(list)) => (list, Vec::new()),
        (_, _) => return Err("invalid response from Docker daemon: not a list".into()),
    };
    let objects = list
        .into_iter()
        .map(|item| match item {
            Value::Object(object) => Ok(object),
            other => Err(format!(
                "invalid response from Docker daemon: {other} is not an object"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((objects, warnings))
}

fn tag_with_node(mut object: Map<String, Value>, node: &str) -> Value {
    let agent = Value::Object(Map::from_iter([(
        "NodeName".to_string(),
        Value::String(node.to_string()),
    )]));
    let portainer = Value::Object(Map::from_iter([("Agent".to_string(), agent)]));
    object.insert("Portainer".into(), portainer);
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answered(node: &str, body: &str) -> NodeResult {
        NodeResult {
            node: node.into(),
            answer: NodeAnswer::Answered {
                status: 200,
                body: body.as_bytes().to_vec(),
            },
        }
    }

    #[test]
    fn arrays_concatenate_with_node_names() {
        let merged = merge(
            ListKind::Containers,
            vec![
                answered("a", r#"[{"Id":"1"},{"Id":"2","Portainer":"x"}]"#),
                answered("b", "[]"),
                answered("c", r#"[{"Id":"3"}]"#),
            ],
        );
        assert_eq!(
            merged.body,
            json!([
                {"Id":"1","Portainer":{"Agent":{"NodeName":"a"}}},
                {"Id":"2","Portainer":{"Agent":{"NodeName":"a"}}},
                {"Id":"3","Portainer":{"Agent":{"NodeName":"c"}}}
            ])
        );
        assert!(merged.failures.is_empty());
        assert_eq!(merged.failure_summary(), None);
    }

    #[test]
    fn volumes_keep_every_nodes_warnings_and_null_is_empty() {
        let merged = merge(
            ListKind::Volumes,
            vec![
                answered("a", r#"{"Volumes":[{"Name":"v"}],"Warnings":["w1"]}"#),
                answered("b", r#"{"Volumes":null,"Warnings":null}"#),
                answered("c", r#"{"Volumes":[],"Warnings":["w2"]}"#),
            ],
        );
        assert_eq!(
            merged.body,
            json!({"Volumes":[{"Name":"v","Portainer":{"Agent":{"NodeName":"a"}}}],"Warnings":["w1","w2"]})
        );
    }

    #[test]
    fn bad_nodes_are_named_not_dropped_silently() {
        let merged = merge(
            ListKind::Images,
            vec![
                answered("ok", r#"[{"Id":"i"}]"#),
                answered("error", r#"{"message":"Invalid request signature"}"#),
                answered("html", "<html>bad gateway</html>"),
                answered("object", r#"{"Id":"i"}"#),
                answered("scalar", "[1]"),
                NodeResult {
                    node: "down".into(),
                    answer: NodeAnswer::Failed("timed out after 10s".into()),
                },
                NodeResult {
                    node: "500".into(),
                    answer: NodeAnswer::Answered {
                        status: 500,
                        body: b"[]".to_vec(),
                    },
                },
            ],
        );
        assert_eq!(merged.body.as_array().unwrap().len(), 1);
        let failed: Vec<&str> = merged.failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(failed, ["error", "html", "object", "scalar", "down", "500"]);
        assert!(merged.failures[0].1.contains("Invalid request signature"));
        let summary = merged.failure_summary().unwrap();
        assert!(
            summary.starts_with("error (HTTP 200: Invalid request signature); html ("),
            "{summary}"
        );
        assert!(!summary.contains('\n'));
    }

    #[test]
    fn big_numbers_survive() {
        let merged = merge(
            ListKind::Images,
            vec![answered("a", r#"[{"Size":9007199254740993}]"#)],
        );
        assert_eq!(merged.body[0]["Size"], json!(9007199254740993u64));
    }
}

#[cfg(test)]
mod recorded {
    //! Merges of answers recorded from the real engine (`fixtures/`).
    use super::*;

    fn body(recorded: &str) -> Vec<u8> {
        let (_, body) = recorded
            .split_once("\n\n")
            .expect("headers, a blank line, a body");
        body.as_bytes().to_vec()
    }

    fn node(name: &str, recorded: &str) -> NodeResult {
        NodeResult {
            node: name.into(),
            answer: NodeAnswer::Answered {
                status: 200,
                body: body(recorded),
            },
        }
    }

    const CONTAINERS: &str = include_str!("../../fixtures/engine-20.10/containers-all.http");
    const VOLUMES: &str = include_str!("../../fixtures/engine-20.10/volumes.http");
    const MISSING: &str = include_str!("../../fixtures/engine-20.10/container-missing.http");

    #[test]
    fn recorded_lists_from_several_nodes() {
        let one_node: Value = serde_json::from_slice(&body(CONTAINERS)).unwrap();
        let per_node = one_node.as_array().unwrap().len();
        assert!(per_node > 0);
        let merged = merge(
            ListKind::Containers,
            vec![
                node("a", CONTAINERS),
                node("b", CONTAINERS),
                NodeResult {
                    node: "c".into(),
                    answer: NodeAnswer::Answered {
                        status: 404,
                        body: body(MISSING),
                    },
                },
                NodeResult {
                    node: "d".into(),
                    answer: NodeAnswer::Answered {
                        status: 502,
                        body: b"Bad Gateway".to_vec(),
                    },
                },
                NodeResult {
                    node: "e".into(),
                    answer: NodeAnswer::Answered {
                        status: 200,
                        body: b"[]".to_vec(),
                    },
                },
            ],
        );
        let listed = merged.body.as_array().unwrap();
        assert_eq!(listed.len(), 2 * per_node);
        assert_eq!(listed[0]["Portainer"]["Agent"]["NodeName"], "a");
        assert_eq!(listed[per_node]["Portainer"]["Agent"]["NodeName"], "b");
        assert_eq!(
            listed[0]["Id"], one_node[0]["Id"],
            "the objects themselves are unchanged"
        );
        let failed: Vec<&str> = merged.failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(failed, ["c", "d"]);
        assert!(merged.failures[0].1.contains("No such container"));
    }

    #[test]
    fn recorded_volumes_and_null_volumes() {
        let merged = merge(
            ListKind::Volumes,
            vec![
                node("a", VOLUMES),
                NodeResult {
                    node: "b".into(),
                    answer: NodeAnswer::Answered {
                        status: 200,
                        body: br#"{"Volumes":null,"Warnings":null}"#.to_vec(),
                    },
                },
            ],
        );
        let recorded: Value = serde_json::from_slice(&body(VOLUMES)).unwrap();
        let volumes = merged.body["Volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), recorded["Volumes"].as_array().unwrap().len());
        assert!(volumes
            .iter()
            .all(|v| v["Portainer"]["Agent"]["NodeName"] == "a"));
        assert!(merged.body["Warnings"].is_array());
        assert!(merged.failures.is_empty());
    }
}
