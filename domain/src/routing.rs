//! Where a request goes: the top-level router of the Portainer agent
//! (reference §3.5–3.6) and the Docker dispatch decision (§5.2), as pure
//! functions of the request head and what the agent knows of its node.
//!
//! Architecture Invariant: the HTTP adapter never matches paths itself; it
//! asks [`route`] and executes the answer.

use crate::engine::{EngineFacts, SwarmRole};

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path as received, version prefix included.
    pub path: &'a str,
    /// `X-PortainerAgent-Target`, if present and non-empty.
    pub target: Option<&'a str>,
    /// `X-PortainerAgent-ManagerOperation` is present and non-empty.
    pub manager_operation: bool,
    /// The request was forwarded by another agent (the hop marker): it is
    /// answered here, never forwarded again, so agents cannot loop.
    pub forwarded: bool,
}

/// What the agent knows of itself when routing.
#[derive(Debug, Clone, Copy)]
pub struct LocalView<'a> {
    pub facts: &'a EngineFacts,
    /// Whether this agent is part of a cluster (gossip is running).
    pub clustered: bool,
}

/// The browse operations (reference §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowseOp {
    List,
    Get,
    Delete,
    Rename,
    Put,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebsocketKind {
    Attach,
    Exec,
    Pod,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/key…`: the Edge key handler, without the common headers.
    Key,
    Ping,
    Agents,
    HostInfo,
    /// `volume` is the legacy `/v1/browse/{id}/…` path segment.
    Browse {
        op: BrowseOp,
        volume: Option<String>,
    },
    Websocket(WebsocketKind),
    KubernetesProxy,
    KubernetesStack,
    DockerHub,
    /// Proxy to Docker; the request goes to the engine with its original path.
    Docker(DockerDispatch),
    /// An agent-API request (host info, browse, consoles) for another node: the whole
    /// request goes to that node's agent (reference §5.5).
    ToNode(String),
    /// An agent path that does not exist: `404 page not found`.
    NotFound,
    /// An agent path with the wrong method: 405, empty body.
    MethodNotAllowed,
}

/// Where a Docker API request is executed (reference §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerDispatch {
    /// This node's engine.
    Local,
    /// The agent on the named node.
    Node(String),
    /// An agent on a swarm manager node (this one if it is a manager).
    Manager,
    /// Every node; answers merged into one list.
    Aggregate(ListKind),
}

/// The lists that are gathered from every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Containers,
    Images,
    Volumes,
    Networks,
}

/// Removes a leading Docker API version segment (`/v1.41`) so routing sees
/// the bare path. Only a whole leading segment of the form `v<digits>.<digits>`
/// is removed: `/volumes/v1.2data` and `/v2/ping` are left alone.
pub fn strip_version_prefix(path: &str) -> &str {
    let Some(after_slash) = path.strip_prefix('/') else {
        return path;
    };
    let segment_end = after_slash.find('/').unwrap_or(after_slash.len());
    let segment = &after_slash[..segment_end];
    if is_api_version(segment) {
        let rest = &after_slash[segment_end..];
        if rest.is_empty() {
            "/"
        } else {
            rest
        }
    } else {
        path
    }
}

fn is_api_version(segment: &str) -> bool {
    let Some(version) = segment.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = version.split_once('.') else {
        return false;
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(major) && all_digits(minor)
}

/// Decides the route of a request on this agent.
pub fn route(head: &RequestHead<'_>, local: LocalView<'_>) -> Route {
    match route_here(head, local) {
        route @ (Route::HostInfo | Route::Browse { .. } | Route::Websocket(_)) => {
            match other_node(head, local) {
                Some(node) => Route::ToNode(node.to_string()),
                None => route,
            }
        }
        route => route,
    }
}

/// The node `X-PortainerAgent-Target` names when it is not this one and the
/// request may still travel.
fn other_node<'a>(head: &RequestHead<'a>, local: LocalView<'_>) -> Option<&'a str> {
    let target = head.target?;
    (local.clustered && !head.forwarded && target != local.facts.node_name).then_some(target)
}

fn route_here(head: &RequestHead<'_>, local: LocalView<'_>) -> Route {
    if head.path.starts_with("/key") {
        return Route::Key;
    }
    let path = strip_version_prefix(head.path);
    if let Some(rest) = path.strip_prefix("/v2") {
        if rest.is_empty() || rest.starts_with('/') {
            return route_v2(head, rest, local);
        }
    }
    if let Some(rest) = path.strip_prefix("/v1") {
        if rest.is_empty() || rest.starts_with('/') {
            return route_v1(head, rest, local);
        }
    }
    route_unprefixed(head, path).unwrap_or_else(|| docker(head, path, local))
}

/// Agent routes shared by the unprefixed and `/v2` forms; `None` means the
/// path is not an agent path and goes to Docker.
fn route_unprefixed(head: &RequestHead<'_>, path: &str) -> Option<Route> {
    let get = head.method == "GET";
    let route = if path.starts_with("/ping") {
        only(path == "/ping", get, Route::Ping)
    } else if path.starts_with("/agents") {
        only(path == "/agents", get, Route::Agents)
    } else if path.starts_with("/host") {
        only(path == "/host/info", get, Route::HostInfo)
    } else if let Some(op) = path.strip_prefix("/browse") {
        browse(head.method, op, None)
    } else if let Some(kind) = path.strip_prefix("/websocket") {
        match kind {
            "/attach" => Route::Websocket(WebsocketKind::Attach),
            "/exec" => Route::Websocket(WebsocketKind::Exec),
            "/pod" => Route::Websocket(WebsocketKind::Pod),
            _ => Route::NotFound,
        }
    } else if path.starts_with("/kubernetes") {
        Route::KubernetesProxy
    } else {
        return None;
    };
    Some(route)
}

fn route_v2(head: &RequestHead<'_>, rest: &str, local: LocalView<'_>) -> Route {
    if rest == "/dockerhub" {
        return only(true, head.method == "POST", Route::DockerHub);
    }
    if rest == "/kubernetes/stack" {
        return only(true, head.method == "POST", Route::KubernetesStack);
    }
    if rest.starts_with("/kubernetes") {
        return Route::NotFound;
    }
    match route_unprefixed(head, rest) {
        Some(route) => route,
        // Unknown /v2 paths go to Docker with the prefix kept, as the Go
        // agent does; Docker then refuses them itself.
        None => docker(head, head.path, local),
    }
}

fn route_v1(head: &RequestHead<'_>, rest: &str, local: LocalView<'_>) -> Route {
    if rest == "/agents" {
        return only(true, head.method == "GET", Route::Agents);
    }
    if rest == "/host/info" {
        return only(true, head.method == "GET", Route::HostInfo);
    }
    if let Some(kind) = rest.strip_prefix("/websocket") {
        return match kind {
            "/attach" => Route::Websocket(WebsocketKind::Attach),
            "/exec" => Route::Websocket(WebsocketKind::Exec),
            _ => Route::NotFound,
        };
    }
    if let Some(volume_and_op) = rest.strip_prefix("/browse/") {
        if let Some((volume, op)) = volume_and_op.split_once('/') {
            if !volume.is_empty() {
                return browse(head.method, &format!("/{op}"), Some(volume.to_string()));
            }
        }
        return Route::NotFound;
    }
    docker(head, head.path, local)
}

fn browse(method: &str, op: &str, volume: Option<String>) -> Route {
    let (op, wanted) = match op {
        "/ls" => (BrowseOp::List, "GET"),
        "/get" => (BrowseOp::Get, "GET"),
        "/delete" => (BrowseOp::Delete, "DELETE"),
        "/rename" => (BrowseOp::Rename, "PUT"),
        "/put" => (BrowseOp::Put, "POST"),
        _ => return Route::NotFound,
    };
    only(true, method == wanted, Route::Browse { op, volume })
}

/// mux semantics: a known path with another method is 405, an unknown one 404.
fn only(path_matches: bool, method_matches: bool, route: Route) -> Route {
    match (path_matches, method_matches) {
        (false, _) => Route::NotFound,
        (true, false) => Route::MethodNotAllowed,
        (true, true) => route,
    }
}

fn docker(head: &RequestHead<'_>, path: &str, local: LocalView<'_>) -> Route {
    Route::Docker(docker_dispatch(head, strip_version_prefix(path), local))
}

/// The Docker dispatch decision of reference §5.2. Outside a cluster, and
/// for requests another agent forwarded, every request is local. `path` is
/// version-stripped.
pub fn docker_dispatch(head: &RequestHead<'_>, path: &str, local: LocalView<'_>) -> DockerDispatch {
    if !local.clustered || head.forwarded {
        return DockerDispatch::Local;
    }
    let facts = local.facts;
    let is_local_target = |target: Option<&str>| match target {
        None => true,
        Some(name) => name == facts.node_name,
    };
    if head.manager_operation {
        return manager_or_local(facts);
    }
    if let Some(kind) = list_kind(head.method, path) {
        // A list with a target is that node's own list. (The Go agent fans
        // out to every node when the target is another node: a quirk.)
        return match head.target {
            None => DockerDispatch::Aggregate(kind),
            Some(_) if is_local_target(head.target) => DockerDispatch::Local,
            Some(node) => DockerDispatch::Node(node.to_string()),
        };
    }
    const MANAGER_PREFIXES: [&str; 7] = [
        "/services",
        "/tasks",
        "/secrets",
        "/configs",
        "/swarm",
        "/info",
        "/nodes",
    ];
    if MANAGER_PREFIXES.iter().any(|p| has_segment_prefix(path, p)) {
        return manager_or_local(facts);
    }
    match head.target {
        Some(target) if !is_local_target(Some(target)) => DockerDispatch::Node(target.to_string()),
        _ => DockerDispatch::Local,
    }
}

fn manager_or_local(facts: &EngineFacts) -> DockerDispatch {
    match facts.role {
        SwarmRole::Manager { .. } => DockerDispatch::Local,
        _ => DockerDispatch::Manager,
    }
}

/// `/info` matches `/info` and `/info/…`, not `/infoX` (the Go agent's plain
/// string prefix is a quirk no Docker path relies on).
fn has_segment_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn list_kind(method: &str, path: &str) -> Option<ListKind> {
    match (method, path) {
        ("GET", "/containers/json") => Some(ListKind::Containers),
        ("GET", "/images/json") => Some(ListKind::Images),
        ("GET", "/volumes") => Some(ListKind::Volumes),
        ("GET", "/networks") => Some(ListKind::Networks),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standalone() -> EngineFacts {
        EngineFacts {
            node_name: "node-1".into(),
            ..EngineFacts::unknown()
        }
    }

    fn swarm(role: SwarmRole) -> EngineFacts {
        EngineFacts {
            node_name: "node-1".into(),
            role,
            node_id: "abc".into(),
            engine_version: "20.10".into(),
        }
    }

    fn head<'a>(method: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            target: None,
            manager_operation: false,
            forwarded: false,
        }
    }

    fn check(method: &str, path: &str, expected: Route) {
        let facts = standalone();
        let local = LocalView {
            facts: &facts,
            clustered: false,
        };
        assert_eq!(
            route(&head(method, path), local),
            expected,
            "{method} {path}"
        );
    }

    #[test]
    fn version_prefix_only_leading_segment() {
        let cases = [
            ("/v1.41/containers/json", "/containers/json"),
            ("/v1.24/_ping", "/_ping"),
            ("/v1.41", "/"),
            ("/volumes/v1.2data", "/volumes/v1.2data"),
            ("/v1.2data/x", "/v1.2data/x"),
            ("/v2/ping", "/v2/ping"),
            ("/v1./x", "/v1./x"),
            ("/v.1/x", "/v.1/x"),
            ("/containers/json", "/containers/json"),
            ("/images/my/v1.2/json", "/images/my/v1.2/json"),
            ("", ""),
            ("*", "*"),
        ];
        for (path, expected) in cases {
            assert_eq!(strip_version_prefix(path), expected, "{path}");
        }
    }

    #[test]
    fn agent_routes() {
        check("GET", "/ping", Route::Ping);
        check("GET", "/v2/ping", Route::Ping);
        check("GET", "/v1.41/ping", Route::Ping);
        check("POST", "/ping", Route::MethodNotAllowed);
        check("GET", "/pingfoo", Route::NotFound);
        check("GET", "/agents", Route::Agents);
        check("GET", "/v1/agents", Route::Agents);
        check("GET", "/v2/agents", Route::Agents);
        check("DELETE", "/agents", Route::MethodNotAllowed);
        check("GET", "/host/info", Route::HostInfo);
        check("GET", "/host/other", Route::NotFound);
        check("GET", "/key", Route::Key);
        check("POST", "/key", Route::Key);
        check("POST", "/v2/dockerhub", Route::DockerHub);
        check("GET", "/v2/dockerhub", Route::MethodNotAllowed);
        check("POST", "/v2/kubernetes/stack", Route::KubernetesStack);
        check("GET", "/kubernetes/api/v1/pods", Route::KubernetesProxy);
        check(
            "GET",
            "/websocket/exec",
            Route::Websocket(WebsocketKind::Exec),
        );
        check(
            "GET",
            "/v2/websocket/attach",
            Route::Websocket(WebsocketKind::Attach),
        );
        check(
            "GET",
            "/v1/websocket/exec",
            Route::Websocket(WebsocketKind::Exec),
        );
        check("GET", "/websocket/other", Route::NotFound);
    }

    #[test]
    fn browse_routes() {
        let browse = |op, volume: Option<&str>| Route::Browse {
            op,
            volume: volume.map(str::to_string),
        };
        check("GET", "/browse/ls", browse(BrowseOp::List, None));
        check("GET", "/v2/browse/get", browse(BrowseOp::Get, None));
        check("DELETE", "/browse/delete", browse(BrowseOp::Delete, None));
        check("PUT", "/browse/rename", browse(BrowseOp::Rename, None));
        check("POST", "/browse/put", browse(BrowseOp::Put, None));
        check("POST", "/browse/ls", Route::MethodNotAllowed);
        check("GET", "/browse/nope", Route::NotFound);
        check(
            "GET",
            "/v1/browse/vol1/ls",
            browse(BrowseOp::List, Some("vol1")),
        );
        check(
            "POST",
            "/v1/browse/vol1/put",
            browse(BrowseOp::Put, Some("vol1")),
        );
        check("GET", "/v1/browse/vol1", Route::NotFound);
    }

    #[test]
    fn docker_paths_go_to_docker() {
        let local = Route::Docker(DockerDispatch::Local);
        check("GET", "/containers/json", local.clone());
        check("GET", "/v1.41/version", local.clone());
        check("GET", "/_ping", local.clone());
        check("POST", "/v1.41/exec/abc/start", local.clone());
        check("GET", "/v2/containers/json", local.clone());
        check("GET", "/v1/containers/json", local.clone());
        check("GET", "/volumes/v1.2data", local.clone());
        check("GET", "/v2", local);
    }

    #[test]
    fn standalone_ignores_target_and_manager_headers() {
        let request = RequestHead {
            target: Some("other"),
            manager_operation: true,
            ..head("GET", "/services")
        };
        let facts = standalone();
        let alone = LocalView {
            facts: &facts,
            clustered: false,
        };
        assert_eq!(
            docker_dispatch(&request, "/services", alone),
            DockerDispatch::Local
        );
    }

    #[test]
    fn cluster_dispatch_decisions() {
        let worker = swarm(SwarmRole::Worker);
        let manager = swarm(SwarmRole::Manager { leader: false });
        let decide = |method, path, target, manager_operation, facts: &EngineFacts| {
            let request = RequestHead {
                method,
                path,
                target,
                manager_operation,
                forwarded: false,
            };
            docker_dispatch(
                &request,
                path,
                LocalView {
                    facts,
                    clustered: true,
                },
            )
        };
        use DockerDispatch::*;
        assert_eq!(
            decide("GET", "/containers/json", None, false, &worker),
            Aggregate(ListKind::Containers)
        );
        assert_eq!(
            decide("GET", "/images/json", Some("node-2"), false, &worker),
            Node("node-2".into())
        );
        assert_eq!(
            decide("GET", "/volumes", Some("node-1"), false, &worker),
            Local
        );
        assert_eq!(decide("POST", "/volumes", None, false, &worker), Local);
        assert_eq!(
            decide("GET", "/networks", None, false, &worker),
            Aggregate(ListKind::Networks)
        );
        assert_eq!(decide("GET", "/services", None, false, &worker), Manager);
        assert_eq!(
            decide("GET", "/nodes/x", Some("node-1"), false, &worker),
            Manager
        );
        assert_eq!(decide("GET", "/info", None, false, &manager), Local);
        assert_eq!(decide("GET", "/infox", None, false, &worker), Local);
        assert_eq!(
            decide("GET", "/containers/json", None, true, &worker),
            Manager
        );
        assert_eq!(
            decide(
                "POST",
                "/containers/a/start",
                Some("node-2"),
                false,
                &worker
            ),
            Node("node-2".into())
        );
        assert_eq!(
            decide(
                "POST",
                "/containers/a/start",
                Some("node-1"),
                false,
                &worker
            ),
            Local
        );
        assert_eq!(decide("GET", "/version", None, false, &manager), Local);
        // A clustered standalone engine fans out and forwards too.
        let alone = standalone();
        assert_eq!(
            decide("GET", "/containers/json", None, false, &alone),
            Aggregate(ListKind::Containers)
        );
        assert_eq!(decide("GET", "/services", None, false, &alone), Manager);
        assert_eq!(
            decide("GET", "/version", Some("node-2"), false, &alone),
            Node("node-2".into())
        );
    }

    #[test]
    fn agent_api_requests_for_other_nodes_are_redirected() {
        let worker = swarm(SwarmRole::Worker);
        let clustered = LocalView {
            facts: &worker,
            clustered: true,
        };
        let for_node = |path, target| RequestHead {
            target,
            ..head("GET", path)
        };
        assert_eq!(
            route(&for_node("/v2/host/info", Some("node-2")), clustered),
            Route::ToNode("node-2".into())
        );
        assert_eq!(
            route(&for_node("/host/info", Some("node-1")), clustered),
            Route::HostInfo
        );
        assert_eq!(
            route(&for_node("/host/info", None), clustered),
            Route::HostInfo
        );
        assert_eq!(
            route(&for_node("/v1/browse/vol/ls", Some("node-2")), clustered),
            Route::ToNode("node-2".into())
        );
        let alone = LocalView {
            facts: &worker,
            clustered: false,
        };
        assert_eq!(
            route(&for_node("/host/info", Some("node-2")), alone),
            Route::HostInfo
        );
        let forwarded = RequestHead {
            forwarded: true,
            ..for_node("/host/info", Some("node-2"))
        };
        assert_eq!(route(&forwarded, clustered), Route::HostInfo);
    }

    #[test]
    fn forwarded_requests_never_leave_again() {
        let worker = swarm(SwarmRole::Worker);
        let request = RequestHead {
            target: Some("elsewhere"),
            manager_operation: true,
            forwarded: true,
            ..head("GET", "/containers/json")
        };
        let local = LocalView {
            facts: &worker,
            clustered: true,
        };
        assert_eq!(
            docker_dispatch(&request, "/containers/json", local),
            DockerDispatch::Local
        );
    }
}
