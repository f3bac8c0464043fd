//! Merging the answers of every node into one cluster-wide list
//! (reference §5.3), keeping Docker's format and saying which nodes are
//! missing and why, instead of dropping them silently.
//!
//! The merged list is written as text, each object's own text kept and the
//! node's tag spliced in before its closing brace: parsing every object
//! into a map and printing it again cost the agent that fans a list out
//! more than the rest of the request together (a 3-node container list,
//! `scripts/bench-cluster`). Answers that are not a plain 2xx list take the
//! parsing path, which names what is wrong with them.

use serde::Deserialize;
use serde_json::value::RawValue;
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

/// The merged list (JSON text) and the nodes that are not in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub body: Vec<u8>,
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
        let (status, body) = match answer {
            NodeAnswer::Answered { status, body } => (status, body),
            NodeAnswer::Failed(why) => {
                failures.push((node, why));
                continue;
            }
        };
        let written = match raw_objects_of(kind, status, &body) {
            Some((objects, node_warnings)) => {
                objects
                    .iter()
                    .for_each(|object| push_tagged(&mut items, object.get(), &node));
                node_warnings
                    .iter()
                    .for_each(|warning| push_item(&mut warnings, warning.get().as_bytes()));
                Ok(())
            }
            None => objects_of(kind, status, &body).map(|(objects, node_warnings)| {
                for object in objects {
                    push_value(&mut items, &tag_with_node(object, &node));
                }
                node_warnings
                    .iter()
                    .for_each(|warning| push_value(&mut warnings, warning));
            }),
        };
        if let Err(why) = written {
            failures.push((node, why));
        }
    }
    let mut body = Vec::with_capacity(items.len() + warnings.len() + 32);
    match kind {
        ListKind::Volumes => {
            body.extend_from_slice(b"{\"Volumes\":[");
            body.extend_from_slice(&items);
            body.extend_from_slice(b"],\"Warnings\":[");
            body.extend_from_slice(&warnings);
            body.extend_from_slice(b"]}");
        }
        _ => {
            body.push(b'[');
            body.extend_from_slice(&items);
            body.push(b']');
        }
    }
    Merged { body, failures }
}

/// A 2xx answer in the expected shape, its objects as they were written;
/// `None` for anything else (the parsing path says what is wrong).
fn raw_objects_of(
    kind: ListKind,
    status: u16,
    body: &[u8],
) -> Option<(Vec<&RawValue>, Vec<&RawValue>)> {
    /// The engine's volume list; "message" present means an error.
    #[derive(Deserialize)]
    struct VolumeList<'a> {
        #[serde(borrow, rename = "Volumes")]
        volumes: Option<Vec<&'a RawValue>>,
        #[serde(borrow, rename = "Warnings", default)]
        warnings: Option<&'a RawValue>,
        #[serde(borrow)]
        message: Option<&'a RawValue>,
    }
    if !(200..300).contains(&status) {
        return None;
    }
    let (objects, warnings) = match kind {
        ListKind::Volumes => {
            let list: VolumeList = serde_json::from_slice(body).ok()?;
            if list.message.is_some() {
                return None;
            }
            let warnings = list
                .warnings
                .and_then(|warnings| serde_json::from_str::<Vec<&RawValue>>(warnings.get()).ok())
                .unwrap_or_default();
            (list.volumes.unwrap_or_default(), warnings)
        }
        _ => (serde_json::from_slice(body).ok()?, Vec::new()),
    };
    objects
        .iter()
        .all(|object| object.get().starts_with('{'))
        .then_some((objects, warnings))
}

/// Appends `object`'s text with the node's tag before its closing brace.
/// An object that may already carry a "Portainer" key is parsed instead,
/// so the tag replaces that key rather than repeating it.
fn push_tagged(items: &mut Vec<u8>, object: &str, node: &str) {
    if object.contains("\"Portainer\"") {
        if let Ok(Value::Object(parsed)) = serde_json::from_str(object) {
            push_value(items, &tag_with_node(parsed, node));
            return;
        }
    }
    let open = &object[..object.len() - 1];
    separate(items);
    items.extend_from_slice(open.as_bytes());
    if !open[1..].trim().is_empty() {
        items.push(b',');
    }
    items.extend_from_slice(b"\"Portainer\":{\"Agent\":{\"NodeName\":");
    push_json(items, &Value::from(node));
    items.extend_from_slice(b"}}}");
}

fn push_item(items: &mut Vec<u8>, text: &[u8]) {
    separate(items);
    items.extend_from_slice(text);
}

fn push_value(items: &mut Vec<u8>, value: &Value) {
    separate(items);
    push_json(items, value);
}

fn separate(items: &mut Vec<u8>) {
    if !items.is_empty() {
        items.push(b',');
    }
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    // Writing JSON into a Vec cannot fail.
    serde_json::to_writer(out, value).expect("a JSON value writes into memory");
}

type Objects = (Vec<Map<String, Value>>, Vec<Value>);

fn objects_of(kind: ListKind, status: u16, body: &[u8]) -> Result<Objects, String> {
    let value: Value = serde_json::from_slice(body)
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

    fn parsed(merged: &Merged) -> Value {
        serde_json::from_slice(&merged.body).expect("the merged list is JSON")
    }

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
            parsed(&merged),
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
            parsed(&merged),
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
        assert_eq!(parsed(&merged).as_array().unwrap().len(), 1);
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
    fn objects_keep_their_text_with_the_tag_spliced_in() {
        let merged = merge(
            ListKind::Networks,
            vec![answered(
                "n\"1",
                "[ {\"Name\" : \"x\\u003c\", \"Size\": 1.50 } , { } ,{\"Labels\":{\"Portainer\":\"l\"}}]\n",
            )],
        );
        assert_eq!(
            String::from_utf8(merged.body).unwrap(),
            concat!(
                r#"[{"Name" : "x\u003c", "Size": 1.50 ,"Portainer":{"Agent":{"NodeName":"n\"1"}}},"#,
                r#"{ "Portainer":{"Agent":{"NodeName":"n\"1"}}},"#,
                r#"{"Labels":{"Portainer":"l"},"Portainer":{"Agent":{"NodeName":"n\"1"}}}]"#
            )
        );
    }

    #[test]
    fn a_node_with_one_bad_object_adds_none_of_its_objects() {
        let merged = merge(
            ListKind::Containers,
            vec![
                answered("a", r#"[{"Id":"1"},"two"]"#),
                answered("b", r#"[{"Id":"3"}]"#),
            ],
        );
        assert_eq!(
            parsed(&merged),
            json!([{"Id":"3","Portainer":{"Agent":{"NodeName":"b"}}}])
        );
        assert_eq!(merged.failures.len(), 1);
        assert!(merged.failures[0].1.contains(r#""two" is not an object"#));
    }

    #[test]
    fn big_numbers_survive() {
        let merged = merge(
            ListKind::Images,
            vec![answered("a", r#"[{"Size":9007199254740993}]"#)],
        );
        assert_eq!(parsed(&merged)[0]["Size"], json!(9007199254740993u64));
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
        let merged_list: Value = serde_json::from_slice(&merged.body).unwrap();
        let listed = merged_list.as_array().unwrap();
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

    /// Keeping each object's text gives what parsing and printing it
    /// gave, compact or pretty-printed.
    #[test]
    fn recorded_lists_merge_as_the_parsed_path_merges_them() {
        for (kind, recorded) in [
            (ListKind::Containers, CONTAINERS),
            (ListKind::Volumes, VOLUMES),
        ] {
            let compact = body(recorded);
            let pretty =
                serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&compact).unwrap())
                    .unwrap();
            for (a, b) in [
                (&compact, &compact),
                (&pretty, &compact),
                (&compact, &pretty),
            ] {
                let merged = merge(
                    kind,
                    vec![
                        node_with_body("a", a.clone()),
                        node_with_body("b", b.clone()),
                    ],
                );
                assert!(merged.failures.is_empty());
                let kept: Value = serde_json::from_slice(&merged.body).unwrap();
                assert_eq!(kept, parsed_merge(kind, &[("a", a), ("b", b)]));
            }
        }
    }

    fn node_with_body(name: &str, body: Vec<u8>) -> NodeResult {
        NodeResult {
            node: name.into(),
            answer: NodeAnswer::Answered { status: 200, body },
        }
    }

    /// The merge made by parsing every object: what berth did before.
    fn parsed_merge(kind: ListKind, nodes: &[(&str, &Vec<u8>)]) -> Value {
        let mut items = Vec::new();
        let mut warnings = Vec::new();
        for (node, body) in nodes {
            let (objects, node_warnings) = objects_of(kind, 200, body).unwrap();
            items.extend(
                objects
                    .into_iter()
                    .map(|object| tag_with_node(object, node)),
            );
            warnings.extend(node_warnings);
        }
        match kind {
            ListKind::Volumes => serde_json::json!({"Volumes": items, "Warnings": warnings}),
            _ => Value::Array(items),
        }
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
        let merged_list: Value = serde_json::from_slice(&merged.body).unwrap();
        let volumes = merged_list["Volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), recorded["Volumes"].as_array().unwrap().len());
        assert!(volumes
            .iter()
            .all(|v| v["Portainer"]["Agent"]["NodeName"] == "a"));
        assert!(merged_list["Warnings"].is_array());
        assert!(merged.failures.is_empty());
    }
}
