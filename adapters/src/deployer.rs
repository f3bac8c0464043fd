//! The `Deployer` port with the docker and compose CLIs, found under
//! `ASSETS_PATH` or on `PATH`, run against the agent's engine
//! (`DOCKER_HOST`), each call bounded by a timeout. A missing tool is a
//! clear error, not a crash.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_ports::{DeployError, Deployer, Deployment, ProjectState, StackEngine};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct CliDeployer {
    assets: PathBuf,
    /// Where tools are looked for after `assets` (the process's `PATH`).
    search: Vec<PathBuf>,
    docker_host: String,
    timeout: Duration,
    /// Given to every tool: the credential helper's configuration.
    tool_env: Vec<(String, String)>,
}

/// The docker configuration that makes the CLIs ask berth's credential
/// helper (`credsStore: portainer`), as the Go agent's image configures
/// them.
const DOCKER_CONFIG: &str = r#"{"credsStore":"portainer"}"#;

/// How to call compose: the `docker-compose` program, or `docker compose`.
enum Compose {
    Standalone(PathBuf),
    Plugin(PathBuf),
}

impl CliDeployer {
    pub fn new(
        assets: impl Into<PathBuf>,
        docker_host: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        let search = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        CliDeployer {
            assets: assets.into(),
            search,
            docker_host: docker_host.into(),
            timeout,
            tool_env: Vec::new(),
        }
    }

    /// Makes the tools ask berth's credential helper, itself under `name`
    /// (a link to this program in `folder/bin`), which asks the lookup at
    /// `lookup`: `folder/config.json` says `credsStore: portainer`.
    ///
    /// # Errors
    /// When the folder, the configuration or the link cannot be written.
    pub fn with_credential_helper(
        mut self,
        folder: &Path,
        name: &str,
        address_variable: &str,
        lookup: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        let bin = folder.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::write(folder.join("config.json"), DOCKER_CONFIG)?;
        let link = bin.join(name);
        let program = std::env::current_exe()?;
        if std::fs::read_link(&link).ok().as_deref() != Some(program.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&program, &link)?;
        }
        let path = std::iter::once(bin.clone())
            .chain(self.search.iter().cloned())
            .collect::<Vec<_>>();
        let path = std::env::join_paths(path)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .into_owned();
        self.tool_env = vec![
            (
                "DOCKER_CONFIG".into(),
                folder.to_string_lossy().into_owned(),
            ),
            ("PATH".into(), path),
            (address_variable.into(), lookup.to_string()),
        ];
        Ok(self)
    }

    /// Looks for tools in `search` instead of `PATH`.
    pub fn with_search_path(mut self, search: Vec<PathBuf>) -> Self {
        self.search = search;
        self
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        let bundled = self.assets.join(name);
        if is_executable(&bundled) {
            return Some(bundled);
        }
        self.search
            .iter()
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    }

    fn docker(&self) -> Result<PathBuf, DeployError> {
        self.find("docker").ok_or_else(|| {
            DeployError::ToolMissing(format!(
                "the docker CLI is not under {} nor on PATH",
                self.assets.display()
            ))
        })
    }

    async fn compose(&self) -> Result<Compose, DeployError> {
        if let Some(standalone) = self.find("docker-compose") {
            return Ok(Compose::Standalone(standalone));
        }
        if let Ok(docker) = self.docker() {
            if self
                .run(&docker, &["compose", "version"], None, &[])
                .await
                .is_ok()
            {
                return Ok(Compose::Plugin(docker));
            }
        }
        Err(DeployError::ToolMissing(format!(
            "docker compose is not under {} nor on PATH",
            self.assets.display()
        )))
    }

    async fn run_compose(
        &self,
        deployment: &Deployment,
        args: &[&str],
    ) -> Result<String, DeployError> {
        let (program, mut full): (PathBuf, Vec<&str>) = match self.compose().await? {
            Compose::Standalone(program) => (program, Vec::new()),
            Compose::Plugin(docker) => (docker, vec!["compose"]),
        };
        full.extend([
            "-f",
            deployment.entry_file.as_str(),
            "--project-name",
            deployment.project.as_str(),
        ]);
        full.extend_from_slice(args);
        self.run(&program, &full, Some(&deployment.folder), &deployment.env)
            .await
    }

    /// Runs a tool; its stderr (else stdout) is the error text.
    async fn run(
        &self,
        program: &Path,
        args: &[&str],
        folder: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<String, DeployError> {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("DOCKER_HOST", &self.docker_host)
            .envs(self.tool_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(folder) = folder {
            command.current_dir(folder);
        }
        let what = format!("{} {}", program.display(), args.join(" "));
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .map_err(|_| DeployError::Timeout(what.clone()))?
            .map_err(|e| DeployError::Failed(format!("cannot run {what}: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(DeployError::Failed(if stderr.is_empty() {
            stdout
        } else {
            stderr
        }))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `docker ps` states of a compose project's containers → where it stands.
pub fn compose_state(states: &str) -> ProjectState {
    let states: Vec<&str> = states
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if states.is_empty() {
        ProjectState::Absent
    } else if states.iter().all(|s| *s == "running") {
        ProjectState::Running
    } else if let Some(bad) = states.iter().find(|s| matches!(**s, "exited" | "dead")) {
        ProjectState::Failed(format!("a container of the stack is {bad}"))
    } else {
        ProjectState::Starting
    }
}

/// `docker service ls` replica counts (`1/1`) of a swarm stack.
pub fn swarm_state(replicas: &str) -> ProjectState {
    let counts: Vec<&str> = replicas
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if counts.is_empty() {
        return ProjectState::Absent;
    }
    let ready = counts.iter().all(|count| {
        let count = count.split_whitespace().next().unwrap_or("");
        matches!(count.split_once('/'), Some((up, want)) if up == want && up != "0")
    });
    if ready {
        ProjectState::Running
    } else {
        ProjectState::Starting
    }
}

impl Deployer for CliDeployer {
    async fn validate(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match (deployment.engine, self.compose().await) {
            (_, Ok(_)) => self
                .run_compose(deployment, &["config", "--quiet"])
                .await
                .map(drop),
            // A swarm needs only the docker CLI; it validates as it deploys.
            (StackEngine::Swarm, Err(_)) => Ok(()),
            (StackEngine::Compose, Err(missing)) => Err(missing),
        }
    }

    async fn pull(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match deployment.engine {
            StackEngine::Compose => self.run_compose(deployment, &["pull"]).await.map(drop),
            StackEngine::Swarm => Ok(()),
        }
    }

    async fn deploy(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match deployment.engine {
            StackEngine::Compose => self.run_compose(deployment, &["up", "-d"]).await.map(drop),
            StackEngine::Swarm => {
                let docker = self.docker()?;
                let args = [
                    "stack",
                    "deploy",
                    "--with-registry-auth",
                    "--compose-file",
                    deployment.entry_file.as_str(),
                    deployment.project.as_str(),
                ];
                self.run(&docker, &args, Some(&deployment.folder), &deployment.env)
                    .await
                    .map(drop)
            }
        }
    }

    async fn state(&self, deployment: &Deployment) -> Result<ProjectState, DeployError> {
        let docker = self.docker()?;
        match deployment.engine {
            StackEngine::Compose => {
                let filter = format!("label=com.docker.compose.project={}", deployment.project);
                let args = [
                    "ps",
                    "-a",
                    "--filter",
                    filter.as_str(),
                    "--format",
                    "{{.State}}",
                ];
                Ok(compose_state(&self.run(&docker, &args, None, &[]).await?))
            }
            StackEngine::Swarm => {
                let filter = format!("label=com.docker.stack.namespace={}", deployment.project);
                let args = [
                    "service",
                    "ls",
                    "--filter",
                    filter.as_str(),
                    "--format",
                    "{{.Replicas}}",
                ];
                Ok(swarm_state(&self.run(&docker, &args, None, &[]).await?))
            }
        }
    }

    async fn remove(&self, deployment: &Deployment) -> Result<(), DeployError> {
        match deployment.engine {
            StackEngine::Compose => self
                .run_compose(deployment, &["down", "--remove-orphans"])
                .await
                .map(drop),
            StackEngine::Swarm => {
                let docker = self.docker()?;
                let args = ["stack", "rm", deployment.project.as_str()];
                let mut attempt = 1;
                loop {
                    match self.run(&docker, &args, None, &[]).await {
                        // `docker stack rm` removes the services, then their
                        // networks, while the services' tasks may still be
                        // stopping: the engine refuses the network until
                        // they have. Asked again a moment later, it finishes.
                        Err(DeployError::Failed(said))
                            if network_still_in_use(&said) && attempt < STACK_RM_ATTEMPTS =>
                        {
                            attempt += 1;
                            tokio::time::sleep(STACK_RM_PAUSE).await;
                        }
                        result => return result.map(drop),
                    }
                }
            }
        }
    }
}

/// How often `docker stack rm` is asked while its networks are in use.
const STACK_RM_ATTEMPTS: u32 = 10;
const STACK_RM_PAUSE: Duration = Duration::from_secs(1);

/// The engine's answer when a stack's network outlives its services' tasks
/// for a moment.
fn network_still_in_use(said: &str) -> bool {
    said.contains("Failed to remove network") && said.contains("is in use by task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_race_of_stack_removal_is_recognised() {
        let said = "Failed to remove network o8rq: Error response from daemon: rpc error: \
            code = FailedPrecondition desc = network o8rq is in use by task oukrf3\
            failed to remove some resources from stack: edge_swarm";
        assert!(network_still_in_use(said));
        assert!(!network_still_in_use("Nothing found in stack: edge_swarm"));
        assert!(!network_still_in_use("permission denied"));
    }

    #[test]
    fn states_read_from_the_cli() {
        assert_eq!(compose_state(""), ProjectState::Absent);
        assert_eq!(compose_state("running\nrunning\n"), ProjectState::Running);
        assert_eq!(compose_state("running\ncreated"), ProjectState::Starting);
        assert!(matches!(
            compose_state("running\nexited"),
            ProjectState::Failed(_)
        ));
        assert_eq!(swarm_state("1/1\n2/2"), ProjectState::Running);
        assert_eq!(swarm_state("0/1"), ProjectState::Starting);
        assert_eq!(swarm_state("1/1 (max 1 per node)"), ProjectState::Running);
        assert_eq!(swarm_state(""), ProjectState::Absent);
    }

    #[tokio::test]
    async fn a_missing_tool_is_a_clear_error() {
        let deployer = CliDeployer::new(
            "/nonexistent",
            "unix:///nonexistent",
            Duration::from_secs(5),
        )
        .with_search_path(Vec::new());
        let deployment = Deployment {
            project: "edge_x".into(),
            folder: std::env::temp_dir(),
            entry_file: "docker-compose.yml".into(),
            env: Vec::new(),
            engine: StackEngine::Compose,
            namespace: None,
        };
        let error = deployer.deploy(&deployment).await.unwrap_err();
        assert!(matches!(error, DeployError::ToolMissing(_)), "{error}");
        assert!(error.to_string().contains("compose"), "{error}");
        let swarm = Deployment {
            engine: StackEngine::Swarm,
            ..deployment
        };
        assert!(
            deployer.validate(&swarm).await.is_ok(),
            "swarm needs no compose"
        );
        assert!(matches!(
            deployer.deploy(&swarm).await,
            Err(DeployError::ToolMissing(_))
        ));
    }
}
