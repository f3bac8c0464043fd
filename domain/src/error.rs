//! The errors a client can see, in the Portainer shape
//! `{"message": …, "details": …}` with the reference's status codes.
//!
//! Architecture Invariant: every error berth answers is built here, so the
//! shape and the wording Portainer relies on live in one place.

/// An error answer: a status code, a short message and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    status: u16,
    message: String,
    details: String,
}

impl AgentError {
    /// `details` gets its first letter upper-cased, as Portainer's libhttp
    /// does with the Go error text.
    pub fn new(status: u16, message: impl Into<String>, details: impl AsRef<str>) -> Self {
        AgentError {
            status,
            message: message.into(),
            details: capitalise_first(details.as_ref()),
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn details(&self) -> &str {
        &self.details
    }

    /// The Docker engine could not be reached (connect failed, socket
    /// missing, engine closed the connection before answering).
    pub fn engine_unreachable(endpoint: &str, cause: &str) -> Self {
        AgentError::new(
            502,
            format!("Unable to proxy the request via the Docker socket {endpoint}"),
            cause,
        )
    }

    /// The engine did not answer within the connect timeout.
    pub fn engine_timeout(endpoint: &str, after_seconds: u64) -> Self {
        AgentError::new(
            504,
            format!("Unable to proxy the request via the Docker socket {endpoint}"),
            format!("The Docker engine did not accept a connection within {after_seconds}s"),
        )
    }

    /// A request berth cannot make sense of.
    pub fn bad_request(details: &str) -> Self {
        AgentError::new(400, "Invalid request", details)
    }

    /// The reference's `/agents` answer on an engine that is not in a cluster.
    pub fn agents_on_standalone() -> Self {
        AgentError::new(
            503,
            "Agent management is not available when running the agent on a standalone engine",
            "Agent management is disabled",
        )
    }

    /// A manager operation with no alive agent on a manager node.
    pub fn no_manager_agent() -> Self {
        AgentError::new(
            500,
            "The agent was unable to contact any other agent located on a manager node",
            "Unable to find an agent on any manager node",
        )
    }

    /// `X-PortainerAgent-Target` names no alive agent.
    pub fn unknown_target() -> Self {
        AgentError::new(
            500,
            "The agent was unable to contact any other agent",
            "Unable to find the targeted agent",
        )
    }

    /// The agent of another node did not answer.
    pub fn peer_unreachable(node: &str, cause: &str) -> Self {
        AgentError::new(
            502,
            format!("Unable to reach the agent on node {node}"),
            cause,
        )
    }

    /// An agent route whose capability this build does not have yet.
    pub fn not_implemented(route: &str) -> Self {
        AgentError::new(
            501,
            "This agent feature is not available in this version of berth",
            format!("{route} is not implemented"),
        )
    }
}

fn capitalise_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_capitalised_like_libhttp() {
        let error = AgentError::new(500, "Unable to do it", "dial unix /x: no such file");
        assert_eq!(error.details(), "Dial unix /x: no such file");
        assert_eq!(AgentError::new(500, "m", "").details(), "");
    }

    #[test]
    fn engine_errors_name_the_socket() {
        let error = AgentError::engine_unreachable("unix:///var/run/docker.sock", "no such file");
        assert_eq!(error.status(), 502);
        assert!(error.message().contains("unix:///var/run/docker.sock"));
        assert_eq!(error.details(), "No such file");
        assert_eq!(AgentError::engine_timeout("tcp://h:1", 5).status(), 504);
    }

    #[test]
    fn standalone_agents_answer_matches_reference() {
        let error = AgentError::agents_on_standalone();
        assert_eq!(error.status(), 503);
        assert_eq!(error.details(), "Agent management is disabled");
    }
}
