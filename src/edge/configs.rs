//! Edge configurations (reference §10.9): files Portainer places in a
//! folder of the host. Saving writes them under the host root, deleting
//! removes the listed files, updating deletes the previous version's files
//! and saves; every path is resolved beneath the host root by the `Files`
//! port, as browsing is, so nothing outside it is reached. The state
//! reported is Idle on success and Failure otherwise.
//!
//! In sync mode the poll answer's `edge_configurations` lists the states
//! Portainer wants applied (`SyncConfigs` fetches each configuration); in
//! async mode `edgeConfig` commands carry them.

use berth_domain::edge::async_protocol::{
    config_state, parse_edge_config, ConfigFile, EdgeConfig, Operation,
};
use berth_domain::edge::status::{field, refusal_text};
use berth_ports::{EdgeCall, Files, PortainerApi};
use http::Method;
use std::time::Duration;
use tracing::{info, warn};

use super::host_files::{delete_on_host, save_on_host};
use super::poll::{PollWork, PollWorker};
use super::reports::{PortainerReports, Reports};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct EdgeConfigs<F> {
    files: F,
}

impl<F: Files> EdgeConfigs<F> {
    pub fn new(files: F) -> Self {
        EdgeConfigs { files }
    }

    /// Applies what `operation` asks of `config`; the state to report.
    pub async fn apply(&self, operation: Operation, config: &EdgeConfig) -> u8 {
        if config.invalid {
            warn!(
                config = config.id,
                "Portainer marked the Edge configuration invalid"
            );
            return config_state::FAILURE;
        }
        let outcome = match operation {
            Operation::Add => self.save(config).await,
            Operation::Remove => self.delete(config, &config.files).await,
            Operation::Replace => match self.delete(config, &config.previous).await {
                Ok(()) => self.save(config).await,
                Err(why) => Err(why),
            },
        };
        match outcome {
            Ok(()) => {
                info!(config = config.id, name = %config.name, ?operation, "Edge configuration applied");
                config_state::IDLE
            }
            Err(why) => {
                warn!(config = config.id, %why, "the Edge configuration failed");
                config_state::FAILURE
            }
        }
    }

    async fn save(&self, config: &EdgeConfig) -> Result<(), String> {
        for file in &config.files {
            save_on_host(
                &self.files,
                &config.base_dir,
                &file.components,
                file.content.clone(),
                file.mode,
            )
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, config: &EdgeConfig, files: &[ConfigFile]) -> Result<(), String> {
        for file in files {
            delete_on_host(
                &self.files,
                &[&config.base_dir[..], &file.components].concat(),
            )
            .await?;
        }
        Ok(())
    }
}

/// Sync mode: the states each poll answer asks for, applied with the
/// configuration fetched from Portainer and the result reported.
pub struct SyncConfigs<F, A> {
    configs: EdgeConfigs<F>,
    api: A,
    reports: PortainerReports<A>,
    edge_id: String,
}

impl<F: Files, A: PortainerApi + Clone> SyncConfigs<F, A> {
    pub fn new(files: F, api: A, edge_id: String) -> Self {
        SyncConfigs {
            configs: EdgeConfigs::new(files),
            reports: PortainerReports::new(api.clone(), edge_id.clone()),
            api,
            edge_id,
        }
    }

    pub async fn apply(&mut self, work: &PollWork) {
        let Some(wanted) = work
            .answer
            .as_object()
            .and_then(|o| field(o, "edge_configurations"))
            .and_then(serde_json::Value::as_object)
        else {
            return;
        };
        for (id, state) in wanted {
            let (Ok(id), Some(state)) = (id.parse::<u64>(), state.as_u64()) else {
                continue;
            };
            let operation = match state as u8 {
                config_state::SAVING => Operation::Add,
                config_state::DELETING => Operation::Remove,
                config_state::UPDATING => Operation::Replace,
                _ => continue,
            };
            let result = match self.fetch(id).await {
                Ok(config) => self.configs.apply(operation, &config).await,
                Err(why) => {
                    warn!(config = id, %why, "the Edge configuration could not be fetched");
                    config_state::FAILURE
                }
            };
            self.reports
                .config_state(work.endpoint_id, id, result)
                .await;
        }
    }

    async fn fetch(&self, id: u64) -> Result<EdgeConfig, String> {
        let call = EdgeCall {
            method: Method::GET,
            path: format!("/api/edge_configurations/{id}/files"),
            headers: vec![("X-PortainerAgent-EdgeID".into(), self.edge_id.clone())],
            body: Vec::new(),
            timeout: CALL_TIMEOUT,
        };
        let answer = self.api.call(call).await.map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(refusal_text(answer.status, &answer.body));
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("the configuration is not JSON: {e}"))?;
        parse_edge_config(&value)
    }
}

impl<F: Files, A: PortainerApi + Clone> PollWorker for SyncConfigs<F, A> {
    async fn apply(&mut self, work: &PollWork) {
        SyncConfigs::apply(self, work).await;
    }
}
