//! tracing to stderr in the format `LOG_MODE` asks for.

use berth_domain::options::{LogLevel, LogMode};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// berth's own crates log at `LOG_LEVEL`; libraries (hyper's connection
/// pool chatter, rustls) only from WARN up, whatever the level.
const OWN_TARGETS: [&str; 4] = ["berth", "berth_adapters", "berth_domain", "berth_ports"];

pub fn init(level: LogLevel, mode: LogMode) {
    let own_level = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    };
    let targets = OWN_TARGETS.iter().fold(
        Targets::new().with_default(own_level.min(LevelFilter::WARN)),
        |targets, target| targets.with_target(*target, own_level),
    );
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(targets);
    // A second init (tests) keeps the first subscriber.
    let _ = match mode {
        LogMode::Pretty => registry.with(layer.with_ansi(true)).try_init(),
        LogMode::NoColor => registry.with(layer.with_ansi(false)).try_init(),
        LogMode::Json => registry.with(layer.json()).try_init(),
    };
}
