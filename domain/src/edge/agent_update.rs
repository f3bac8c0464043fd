//! What an agent started by Portainer's updater does about the agent it
//! replaces (reference §10.12): which listed containers are agents, which
//! one is the old agent to remove, what the new one is renamed to, and
//! which updater containers and networks are left to clean.
//!
//! Unlike the Go agent: the old agent is the container the new one was
//! named after (`<name>-update`), or the only other agent; with several
//! other agents and no name to go by none is removed (the Go agent removed
//! whichever its map gave last). berth never removes its own container,
//! matches its start line in any case and on either stream (the Go agent
//! looked for a capitalisation no agent writes, on stdout only), and leaves
//! the predefined networks alone (removing `bridge` always failed, which
//! made the Go agent's cleanup give up before the next container).

use std::collections::BTreeMap;

use serde_json::Value;

pub const AGENT_LABEL: &str = "io.portainer.agent";
pub const SCHEDULE_LABEL: &str = "io.portainer.update.scheduleId";
pub const UPDATER_LABEL: &str = "io.portainer.updater";
const AGENT_IMAGES: [&str; 2] = ["portainer/agent", "portainerci/agent"];
const START_LINE: &str = "starting agent api server";
const NEW_NAME_SUFFIX: &str = "-update";
const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];
/// How much of a container's log is read looking for the start line: it
/// is among an agent's first lines, and a busy container's whole log is
/// not read to find it.
pub const LOG_HEAD: usize = 256 * 1024;

/// One container of the engine's list (`GET /containers/json?all=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub state: String,
    pub labels: BTreeMap<String, String>,
    /// Network name → network ID.
    pub networks: BTreeMap<String, String>,
}

impl Listed {
    fn from_value(value: &Value) -> Option<Listed> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let strings = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default()
        };
        let name = value["Names"]
            .as_array()
            .and_then(|names| names.first())
            .map(|n| text(n).trim_start_matches('/').to_string())
            .unwrap_or_default();
        let networks = value["NetworkSettings"]["Networks"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(name, n)| (name.clone(), text(&n["NetworkID"])))
                    .collect()
            })
            .unwrap_or_default();
        Some(Listed {
            id: value["Id"].as_str()?.to_string(),
            name,
            image: text(&value["Image"]),
            state: text(&value["State"]),
            labels: strings(&value["Labels"]),
            networks,
        })
    }

    /// An agent by its label or its image; the others are known by their
    /// logs ([`log_marks_agent`]).
    pub fn marked_as_agent(&self) -> bool {
        self.labels.get(AGENT_LABEL).is_some_and(|v| v == "true")
            || AGENT_IMAGES.iter().any(|p| self.image.starts_with(p))
    }

    /// Whether this is the container berth runs in: a container's host
    /// name is its name or the start of its ID.
    pub fn is_host(&self, hostname: &str) -> bool {
        !hostname.is_empty() && (self.name == hostname || self.id.starts_with(hostname))
    }
}

/// The engine's container list; entries without an ID are skipped.
pub fn listed(list: &Value) -> Vec<Listed> {
    list.as_array()
        .map(|items| items.iter().filter_map(Listed::from_value).collect())
        .unwrap_or_default()
}

/// Whether a log (stdout and stderr together) holds an agent's start line.
pub fn log_marks_agent(log: &str) -> bool {
    log.to_ascii_lowercase().contains(START_LINE)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The old agent's ID.
    pub remove: Option<String>,
    /// The new agent's ID and the name it takes.
    pub rename: Option<(String, String)>,
    /// Why no old agent was chosen, when there were candidates.
    pub undecided: Option<String>,
}

/// What to do about `agents` (every container found to be an agent) for
/// update `update_id`, berth running in the container with host name
/// `hostname`.
pub fn plan(update_id: i64, agents: &[Listed], hostname: &str) -> Plan {
    let schedule = update_id.to_string();
    let is_new = |c: &&Listed| c.labels.get(SCHEDULE_LABEL) == Some(&schedule);
    let new_ones: Vec<&Listed> = agents.iter().filter(is_new).collect();
    let new = new_ones
        .iter()
        .find(|c| c.is_host(hostname))
        .or(new_ones.first())
        .copied();
    let others: Vec<&Listed> = agents
        .iter()
        .filter(|c| !is_new(c) && !c.is_host(hostname))
        .collect();
    let base_name = new.and_then(|n| n.name.strip_suffix(NEW_NAME_SUFFIX));
    let old = match base_name.and_then(|base| others.iter().find(|c| c.name == base)) {
        Some(named) => Some(*named),
        None if others.len() == 1 => Some(others[0]),
        None => None,
    };
    let undecided = (old.is_none() && others.len() > 1).then(|| {
        let names: Vec<&str> = others.iter().map(|c| c.name.as_str()).collect();
        format!(
            "{} other agent containers ({}) and none named after the new one: none removed",
            others.len(),
            names.join(", ")
        )
    });
    let rename = new.and_then(|n| {
        let base = n.name.strip_suffix(NEW_NAME_SUFFIX)?;
        let to = old.map_or(base, |o| o.name.as_str());
        (!to.is_empty()).then(|| (n.id.clone(), to.to_string()))
    });
    Plan {
        remove: old.map(|o| o.id.clone()),
        rename,
        undecided,
    }
}

/// An exited updater container and the networks to remove after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: String,
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub removals: Vec<Removal>,
    /// An updater still runs: the cleanup is tried again later.
    pub still_running: bool,
}

/// What to clean among `updaters` (the containers labelled
/// `io.portainer.updater=true`).
pub fn updater_cleanup(updaters: &[Listed]) -> Cleanup {
    let mut cleanup = Cleanup::default();
    for updater in updaters {
        match updater.state.as_str() {
            "exited" => cleanup.removals.push(Removal {
                id: updater.id.clone(),
                networks: updater
                    .networks
                    .iter()
                    .filter(|(name, _)| !PREDEFINED_NETWORKS.contains(&name.as_str()))
                    .map(|(_, id)| id.clone())
                    .filter(|id| !id.is_empty())
                    .collect(),
            }),
            "running" => cleanup.still_running = true,
            _ => {}
        }
    }
    cleanup
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(id: &str, name: &str, image: &str, labels: Value) -> Value {
        json!({"Id": id, "Names": [format!("/{name}")], "Image": image,
               "State": "running", "Labels": labels})
    }

    fn agents(list: Value) -> Vec<Listed> {
        listed(&list)
    }

    #[test]
    fn agents_are_known_by_label_image_or_start_line() {
        let list = agents(json!([
            container(
                "a",
                "labelled",
                "berth",
                json!({"io.portainer.agent": "true"})
            ),
            container("b", "go", "portainer/agent:2.19", json!({})),
            container("c", "ci", "portainerci/agent:develop", json!({})),
            container("d", "web", "nginx", json!({"io.portainer.agent": "false"})),
        ]));
        let marked: Vec<bool> = list.iter().map(Listed::marked_as_agent).collect();
        assert_eq!(marked, [true, true, true, false]);
        assert!(log_marks_agent(
            "2026-12-01T10:00:00Z  INFO starting Agent API server mode=edge"
        ));
        assert!(log_marks_agent("Starting Agent API server"));
        assert!(!log_marks_agent("starting web server"));
    }

    #[test]
    fn the_old_agent_is_the_one_the_new_is_named_after() {
        let list = agents(json!([
            container(
                "new1",
                "portainer_edge_agent-update",
                "portainer/agent:2.20",
                json!({"io.portainer.update.scheduleId": "7"})
            ),
            container(
                "old1",
                "portainer_edge_agent",
                "portainer/agent:2.19",
                json!({})
            ),
            container("other", "second_agent", "portainer/agent:2.19", json!({})),
        ]));
        let plan = plan(7, &list, "new1");
        assert_eq!(plan.remove.as_deref(), Some("old1"));
        assert_eq!(
            plan.rename,
            Some(("new1".to_string(), "portainer_edge_agent".to_string()))
        );
        assert_eq!(plan.undecided, None);
    }

    #[test]
    fn a_single_other_agent_is_the_old_one_whatever_its_name() {
        let list = agents(json!([
            container(
                "new1",
                "agent-update",
                "berth",
                json!({"io.portainer.update.scheduleId": "3", "io.portainer.agent": "true"})
            ),
            container("old1", "renamed_by_hand", "portainer/agent:2.19", json!({})),
        ]));
        let plan = plan(3, &list, "new1");
        assert_eq!(plan.remove.as_deref(), Some("old1"));
        assert_eq!(plan.rename, Some(("new1".into(), "renamed_by_hand".into())));
    }

    #[test]
    fn several_other_agents_and_no_name_to_go_by_remove_none() {
        let list = agents(json!([
            container(
                "new1",
                "fresh",
                "berth",
                json!({"io.portainer.update.scheduleId": "3"})
            ),
            container("a", "one", "portainer/agent", json!({})),
            container("b", "two", "portainer/agent", json!({})),
        ]));
        let plan = plan(3, &list, "new1");
        assert_eq!(plan.remove, None);
        assert_eq!(plan.rename, None, "not named -update: keeps its name");
        assert!(plan.undecided.unwrap().contains("one, two"));
    }

    #[test]
    fn berth_never_removes_its_own_container() {
        // The schedule label on another container (a second update) and
        // berth's own container unlabelled: berth is not the old agent.
        let list = agents(json!([
            container(
                "0123456789abcdef",
                "me",
                "berth",
                json!({"io.portainer.agent": "true"})
            ),
            container(
                "new1",
                "other-update",
                "berth",
                json!({"io.portainer.update.scheduleId": "9"})
            ),
        ]));
        let plan = plan(9, &list, "0123456789ab");
        assert_eq!(plan.remove, None);
        assert_eq!(plan.rename, Some(("new1".into(), "other".into())));
    }

    #[test]
    fn a_wrong_or_missing_schedule_finds_no_new_agent() {
        let list = agents(json!([container(
            "x",
            "agent-update",
            "berth",
            json!({"io.portainer.update.scheduleId": "2"})
        ),]));
        let plan = plan(5, &list, "x");
        assert_eq!(plan, Plan::default(), "only itself among the agents");
    }

    #[test]
    fn exited_updaters_go_with_their_own_networks_and_running_ones_wait() {
        let list = listed(&json!([
            {"Id": "u1", "Names": ["/updater"], "State": "exited",
             "NetworkSettings": {"Networks": {
                 "bridge": {"NetworkID": "b0"}, "updater_net": {"NetworkID": "n1"}}}},
            {"Id": "u2", "Names": ["/updater2"], "State": "running"},
            {"Id": "u3", "Names": ["/made"], "State": "created"},
            {"Names": ["/no-id"], "State": "exited"},
        ]));
        let cleanup = updater_cleanup(&list);
        assert_eq!(
            cleanup.removals,
            [Removal {
                id: "u1".into(),
                networks: vec!["n1".into()]
            }]
        );
        assert!(cleanup.still_running);
        assert_eq!(updater_cleanup(&[]), Cleanup::default());
    }
}
