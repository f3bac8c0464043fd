//! After Portainer's updater started berth as the new agent (`UPDATE_ID`
//! set, Docker platform): the old agent removed, the new one given its
//! name, and the updater's exited containers and networks cleaned in the
//! background (reference §10.12). The decisions are the domain's
//! (`edge::agent_update`); this carries them out through the engine.

use std::time::Duration;

use berth_domain::edge::agent_update::{self, Listed, Plan, LOG_HEAD, UPDATER_LABEL};
use berth_domain::edge::async_protocol::ContainerAction;
use berth_ports::DockerEngine;
use tracing::{info, warn};

use super::engine_calls::EngineCalls;

/// The Go agent's pace for the updater cleanup.
pub const CLEANUP_ATTEMPTS: u32 = 3;
pub const CLEANUP_PAUSE: Duration = Duration::from_secs(10);

const FORCE_REMOVE: ContainerAction = ContainerAction::Delete {
    force: true,
    volumes: false,
};

/// Replaces the old agent, then cleans the updater containers; logs what
/// it did and what failed, and never stops berth.
pub async fn finish_update<E: DockerEngine>(
    calls: EngineCalls<E>,
    update_id: i64,
    hostname: String,
) {
    match replace_old_agent(&calls, update_id, &hostname).await {
        Ok(()) => info!(update_id, "agent update finished"),
        Err(error) => warn!(update_id, %error, "the agent update could not be finished"),
    }
    clean_updaters(&calls, CLEANUP_ATTEMPTS, CLEANUP_PAUSE).await;
}

async fn replace_old_agent<E: DockerEngine>(
    calls: &EngineCalls<E>,
    update_id: i64,
    hostname: &str,
) -> Result<(), String> {
    let agents = agents(calls).await?;
    let Plan {
        remove,
        rename,
        undecided,
    } = agent_update::plan(update_id, &agents, hostname);
    if let Some(why) = undecided {
        warn!(update_id, "{why}");
    }
    if let Some(old) = remove {
        match calls.container(&old, &FORCE_REMOVE).await {
            Ok(()) => info!(container = %old, "the old agent container is removed"),
            Err(error) => {
                warn!(container = %old, %error, "the old agent container could not be removed")
            }
        }
    }
    if let Some((new, name)) = rename {
        calls.rename_container(&new, &name).await.map_err(|error| {
            format!("the new agent container could not be renamed to {name}: {error}")
        })?;
        info!(container = %new, name = %name, "the new agent container takes the old name");
    }
    Ok(())
}

/// Every container that is an agent: by label or image, else by the start
/// line near the top of its log.
async fn agents<E: DockerEngine>(calls: &EngineCalls<E>) -> Result<Vec<Listed>, String> {
    let listed = agent_update::listed(&calls.containers(None).await?);
    let mut agents = Vec::new();
    for container in listed {
        if container.marked_as_agent() {
            agents.push(container);
            continue;
        }
        match calls.log_head(&container.id, LOG_HEAD).await {
            Ok(log) if agent_update::log_marks_agent(&log) => agents.push(container),
            Ok(_) => {}
            // A container whose log cannot be read (a logging driver
            // without reads) is simply not known to be an agent.
            Err(error) => {
                tracing::debug!(container = %container.id, %error, "log not read");
            }
        }
    }
    Ok(agents)
}

/// Removes exited updater containers and their networks; tries again,
/// `attempts` times in all, while one still runs or a removal fails.
pub async fn clean_updaters<E: DockerEngine>(
    calls: &EngineCalls<E>,
    attempts: u32,
    pause: Duration,
) {
    let label = format!("{UPDATER_LABEL}=true");
    for attempt in 1..=attempts {
        match clean_once(calls, &label).await {
            Ok(()) => return,
            Err(error) if attempt < attempts => {
                info!(attempt, %error, "updater cleanup tried again in {}s", pause.as_secs());
                tokio::time::sleep(pause).await;
            }
            Err(error) => warn!(attempt, %error, "updater cleanup given up"),
        }
    }
}

async fn clean_once<E: DockerEngine>(calls: &EngineCalls<E>, label: &str) -> Result<(), String> {
    let updaters = agent_update::listed(&calls.containers(Some(label)).await?);
    let cleanup = agent_update::updater_cleanup(&updaters);
    let mut failures = Vec::new();
    for removal in cleanup.removals {
        if let Err(error) = calls.container(&removal.id, &FORCE_REMOVE).await {
            failures.push(format!("container {}: {error}", removal.id));
            continue;
        }
        info!(container = %removal.id, "an exited updater container is removed");
        for network in removal.networks {
            if let Err(error) = calls.delete_network(&network).await {
                failures.push(format!("network {network}: {error}"));
            }
        }
    }
    if cleanup.still_running {
        failures.push("an updater container still runs".to_string());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
