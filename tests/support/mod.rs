//! Helpers shared by berth's test binaries: fixtures, fakes of the ports, a
//! TLS client, and a running berth process.
#![allow(dead_code)]

pub mod async_portainer;
pub mod berth_process;
pub mod chisel;
pub mod chromium;
pub mod client;
pub mod console;
pub mod edge_world;
pub mod eventually;
pub mod fake_cluster;
pub mod fake_engine;
pub mod fake_host;
pub mod files;
pub mod fixtures;
pub mod go_agent;
pub mod hostile_scripts;
pub mod imitation_chisel;
pub mod in_process;
pub mod kube;
pub mod manual_clock;
pub mod openssh;
pub mod output_lines;
pub mod own_engine;
pub mod piped;
pub mod portainer_ce;
pub mod portainer_server;
pub mod registry;
pub mod scripted_ssh;
pub mod serf_peer;
pub mod temp_dir;
pub mod tinyproxy;
pub mod unique;
