//! The command line, built from the domain's option table: every option is
//! a flag with its environment variable as fallback.

use std::ffi::OsString;

use berth_domain::options::{OptionError, Options, RawOptions, Source, ValueKind, OPTION_SPECS};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};

/// Why the command line did not give options.
#[derive(Debug)]
pub enum CliOutcome {
    /// `--help`, `--version`, or a clap usage error: clap prints it.
    Clap(clap::Error),
    /// A value that does not fit its option.
    Invalid(OptionError),
}

pub fn command() -> Command {
    let mut command = Command::new("berth")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Portainer agent: proxies the local Docker engine's API for Portainer")
        .after_help("Every option can also be given by its environment variable.");
    for spec in OPTION_SPECS {
        let help = match spec.default {
            Some(default) if !default.is_empty() => format!("{} [default: {default}]", spec.help),
            _ => spec.help.to_string(),
        };
        let mut arg = Arg::new(spec.env)
            .long(spec.flag)
            .env(spec.env)
            // Secrets and keys must not show up in --help.
            .hide_env_values(true)
            .help(help)
            .action(ArgAction::Set);
        for alias in spec.aliases {
            arg = arg.alias(*alias);
        }
        if spec.kind == ValueKind::Flag {
            arg = arg
                .num_args(0..=1)
                .default_missing_value("true")
                .require_equals(true);
        }
        command = command.arg(arg);
    }
    command
}

/// Reads flags and environment into checked options.
///
/// # Errors
/// [`CliOutcome::Clap`] for help, version and usage errors;
/// [`CliOutcome::Invalid`] for a bad value.
pub fn parse<I, T>(args: I) -> Result<Options, CliOutcome>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command()
        .try_get_matches_from(args)
        .map_err(CliOutcome::Clap)?;
    let mut raw = RawOptions::new();
    for spec in OPTION_SPECS {
        let Some(value) = matches.get_one::<String>(spec.env) else {
            continue;
        };
        let source = match matches.value_source(spec.env) {
            Some(ValueSource::CommandLine) => Source::Flag,
            _ => Source::Environment,
        };
        raw.set(spec.env, value.clone(), source);
    }
    Options::from_raw(&raw).map_err(CliOutcome::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_options() {
        let options = parse([
            "berth",
            "--port",
            "9443",
            "--log-level=debug",
            "--edge",
            "--edge-id",
            "x",
        ])
        .unwrap();
        assert_eq!(options.port, 9443);
        assert!(options.edge.enabled);
        assert_eq!(options.edge.id.as_deref(), Some("x"));
    }

    #[test]
    fn deprecated_aliases_work() {
        let options = parse(["berth", "--sslcert", "/c.pem"]).unwrap();
        assert_eq!(options.mtls.cert.as_deref(), Some("/c.pem"));
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        match parse(["berth", "--port", "abc"]) {
            Err(CliOutcome::Invalid(error)) => {
                assert_eq!(error.source, Source::Flag);
                assert!(error.to_string().contains("--port"));
            }
            other => panic!("expected an invalid value, got {other:?}"),
        }
    }

    #[test]
    fn help_lists_every_variable() {
        let help = command().render_long_help().to_string();
        for spec in OPTION_SPECS {
            assert!(help.contains(spec.env), "{} missing from --help", spec.env);
        }
    }
}
