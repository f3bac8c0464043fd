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

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the agent.
    Run(Options),
    /// Check the local agent's `/ping` and exit 0 or 1 (the image's
    /// HEALTHCHECK, which has no shell to run curl with).
    Healthcheck(Options),
}

pub fn command() -> Command {
    let mut command = Command::new("berth")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Portainer agent: proxies the local Docker engine's API for Portainer")
        .after_help("Every option can also be given by its environment variable.")
        .subcommand(
            Command::new("healthcheck")
                .about("Checks that the agent on this machine answers GET /ping; exits 0 or 1"),
        )
        .subcommand(
            // Answered before options are read (src/credential_helper.rs);
            // here for --help.
            Command::new("credential-helper")
                .about("The docker credential helper of Edge stacks (also run as docker-credential-portainer): get, store, erase, list")
                .arg(Arg::new("action").required(true)),
        )
        .args_conflicts_with_subcommands(false);
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
pub fn parse<I, T>(args: I) -> Result<Invocation, CliOutcome>
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
    let options = Options::from_raw(&raw).map_err(CliOutcome::Invalid)?;
    Ok(match matches.subcommand_name() {
        Some("healthcheck") => Invocation::Healthcheck(options),
        _ => Invocation::Run(options),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_options<I: IntoIterator<Item = &'static str>>(args: I) -> Options {
        match parse(args).unwrap() {
            Invocation::Run(options) => options,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn healthcheck_is_a_subcommand() {
        assert!(
            matches!(parse(["berth", "--port", "9443", "healthcheck"]), Ok(Invocation::Healthcheck(o)) if o.port == 9443)
        );
    }

    #[test]
    fn flags_set_options() {
        let options = run_options([
            "berth",
            "--port",
            "9443",
            "--log-level=debug",
            "--edge",
            "--edge-id",
            "x",
        ]);
        assert_eq!(options.port, 9443);
        assert!(options.edge.enabled);
        assert_eq!(options.edge.id.as_deref(), Some("x"));
    }

    #[test]
    fn deprecated_aliases_work() {
        let options = run_options(["berth", "--sslcert", "/c.pem"]);
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
