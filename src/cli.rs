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
    /// One of the operator's commands, with the agent's options.
    Operator(OperatorCommand, Options),
    /// Text made from the command line's own definition.
    Generated(Generated),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    Doctor,
    Status {
        json: bool,
    },
    KeysNew {
        dir: std::path::PathBuf,
        ed25519: bool,
    },
    KeysClientCert {
        dir: std::path::PathBuf,
        ca_cert: String,
        ca_key: String,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    Completions(clap_complete::Shell),
    Man,
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
        .subcommand(
            Command::new("doctor").about(
                "Checks the engine, the advertise address, the cluster's gossip paths, the certificate, \
                 Edge and the mounts, with the agent's options; exits 1 if any check failed",
            ),
        )
        .subcommand(
            Command::new("status")
                .about("Shows the running agent's state, read from its control socket under DATA_PATH")
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("The status document as JSON, for scripts"),
                ),
        )
        .subcommand(
            Command::new("keys")
                .about("Signature keys for clients other than Portainer")
                .subcommand_required(true)
                .subcommand(
                    Command::new("new")
                        .about(
                            "Makes a key pair and a docker CLI config.json that signs with it \
                             (over AGENT_SECRET when set); beware: an agent without AGENT_SECRET \
                             pairs with the first key that signs",
                        )
                        .arg(
                            Arg::new("ed25519")
                                .long("ed25519")
                                .action(ArgAction::SetTrue)
                                .help("An Ed25519 key (berth only) instead of Portainer's P-256"),
                        )
                        .arg(
                            Arg::new("dir")
                                .required(true)
                                .value_parser(clap::value_parser!(std::path::PathBuf))
                                .help("Where to write config.json, signing-key.pem and ca.pem"),
                        ),
                )
                .subcommand(
                    Command::new("client-cert")
                        .about(
                            "Issues a client certificate from the SSL_CACERT CA for docker's own tools \
                             (agents with AGENT_CLIENT_CERT_AUTH=1 take it instead of a signature)",
                        )
                        .arg(
                            Arg::new("ca-cert")
                                .long("ca-cert")
                                .required(true)
                                .help("The CA certificate (PEM)"),
                        )
                        .arg(
                            Arg::new("ca-key")
                                .long("ca-key")
                                .required(true)
                                .help("The CA's private key (PKCS#8 PEM)"),
                        )
                        .arg(
                            Arg::new("name")
                                .long("name")
                                .default_value("berth-client")
                                .help("The certificate's common name"),
                        )
                        .arg(
                            Arg::new("dir")
                                .required(true)
                                .value_parser(clap::value_parser!(std::path::PathBuf))
                                .help("Where to write cert.pem, key.pem and ca.pem"),
                        ),
                ),
        )
        .subcommand(
            Command::new("completions")
                .about("Prints shell completions")
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
        .subcommand(Command::new("man").about("Prints the man page (roff)"))
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
    match matches.subcommand() {
        Some(("completions", sub)) => {
            if let Some(shell) = sub.get_one::<clap_complete::Shell>("shell") {
                return Ok(Invocation::Generated(Generated::Completions(*shell)));
            }
        }
        Some(("man", _)) => return Ok(Invocation::Generated(Generated::Man)),
        _ => {}
    }
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
    Ok(match matches.subcommand() {
        Some(("healthcheck", _)) => Invocation::Healthcheck(options),
        Some(("doctor", _)) => Invocation::Operator(OperatorCommand::Doctor, options),
        Some(("status", sub)) => Invocation::Operator(
            OperatorCommand::Status {
                json: sub.get_flag("json"),
            },
            options,
        ),
        Some(("keys", keys)) => match keys.subcommand() {
            Some(("new", new)) => Invocation::Operator(
                OperatorCommand::KeysNew {
                    dir: new
                        .get_one::<std::path::PathBuf>("dir")
                        .cloned()
                        .unwrap_or_default(),
                    ed25519: new.get_flag("ed25519"),
                },
                options,
            ),
            Some(("client-cert", cert)) => {
                let text = |id: &str| cert.get_one::<String>(id).cloned().unwrap_or_default();
                Invocation::Operator(
                    OperatorCommand::KeysClientCert {
                        dir: cert
                            .get_one::<std::path::PathBuf>("dir")
                            .cloned()
                            .unwrap_or_default(),
                        ca_cert: text("ca-cert"),
                        ca_key: text("ca-key"),
                        name: text("name"),
                    },
                    options,
                )
            }
            _ => Invocation::Run(options),
        },
        _ => Invocation::Run(options),
    })
}

/// Writes completions for `shell`, or the man page, to `out`.
///
/// # Errors
/// When `out` cannot be written.
pub fn generate(what: Generated, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    match what {
        Generated::Completions(shell) => {
            clap_complete::generate(shell, &mut command(), "berth", out);
            Ok(())
        }
        Generated::Man => clap_mangen::Man::new(command()).render(out),
    }
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
    fn operator_commands_parse_with_the_agents_options() {
        assert!(matches!(
            parse(["berth", "status", "--json"]),
            Ok(Invocation::Operator(
                OperatorCommand::Status { json: true },
                _
            ))
        ));
        assert!(matches!(
            parse(["berth", "--port", "9443", "doctor"]),
            Ok(Invocation::Operator(OperatorCommand::Doctor, o)) if o.port == 9443
        ));
        match parse(["berth", "keys", "new", "--ed25519", "/tmp/k"]) {
            Ok(Invocation::Operator(OperatorCommand::KeysNew { dir, ed25519: true }, _)) => {
                assert_eq!(dir, std::path::PathBuf::from("/tmp/k"));
            }
            other => panic!("expected keys new, got {other:?}"),
        }
        assert!(matches!(parse(["berth", "keys"]), Err(CliOutcome::Clap(_))));
    }

    #[test]
    fn completions_and_the_man_page_come_from_the_same_definitions() {
        for shell in ["bash", "zsh", "fish"] {
            let Ok(Invocation::Generated(what)) = parse(["berth", "completions", shell]) else {
                panic!("completions {shell}");
            };
            let mut out = Vec::new();
            generate(what, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("doctor") && text.contains("edge-id"),
                "{shell}"
            );
        }
        let mut man = Vec::new();
        generate(Generated::Man, &mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(
            man.contains(".TH berth") && man.contains("AGENT_SECRET"),
            "{man}"
        );
        assert!(matches!(
            parse(["berth", "completions", "tcsh"]),
            Err(CliOutcome::Clap(_))
        ));
    }

    #[test]
    fn help_lists_every_variable() {
        let help = command().render_long_help().to_string();
        for spec in OPTION_SPECS {
            assert!(help.contains(spec.env), "{} missing from --help", spec.env);
        }
    }
}
