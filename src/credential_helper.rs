//! `docker-credential-portainer`, the docker credential helper Edge stacks
//! use (`credsStore: portainer`): the same binary as berth, called by that
//! name or as `berth credential-helper <action>`. `get` reads a registry
//! address on stdin and asks berth's lookup server for it; the rest
//! answer as a read-only store. It runs in the docker or compose CLI's
//! process tree, so it is plain blocking code without berth's options.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use berth_domain::edge::registry::{
    helper_answer, lookup_target, parse_lookup_answer, HelperAction, RegistryCredential,
    MISSING_SERVER_URL,
};

/// The helper's name on `PATH`, as `credsStore: portainer` makes the CLIs
/// look for it.
pub const HELPER_NAME: &str = "docker-credential-portainer";
/// Where the lookup server listens; berth sets it for the tools it runs.
pub const ADDRESS_VARIABLE: &str = "BERTH_CREDENTIALS_ADDR";
const DEFAULT_ADDRESS: &str = "127.0.0.1:9005";
const TIMEOUT: Duration = Duration::from_secs(5);
/// A lookup answer is a few hundred bytes.
const MAX_ANSWER: u64 = 64 * 1024;

/// The action when the process was started as the helper: by its name,
/// or as `berth credential-helper <action>`.
pub fn invoked_as(args: &[OsString]) -> Option<String> {
    let program = Path::new(args.first()?).file_name()?;
    let action = if program == HELPER_NAME {
        args.get(1)
    } else if args.get(1).is_some_and(|a| a == "credential-helper") {
        args.get(2)
    } else {
        return None;
    };
    Some(action.map_or_else(String::new, |a| a.to_string_lossy().into_owned()))
}

pub fn run(action: &str) -> ExitCode {
    let Some(action) = HelperAction::parse(action) else {
        println!("Unknown credential action `{action}`");
        return ExitCode::FAILURE;
    };
    let mut input = String::new();
    if matches!(action, HelperAction::Get) && std::io::stdin().read_to_string(&mut input).is_err() {
        println!("{MISSING_SERVER_URL}");
        return ExitCode::FAILURE;
    }
    let server_url = input.trim();
    if matches!(action, HelperAction::Get) && server_url.is_empty() {
        println!("{MISSING_SERVER_URL}");
        return ExitCode::FAILURE;
    }
    let found = match action {
        HelperAction::Get => ask(server_url).unwrap_or_else(|why| {
            // The CLI shows stderr only when the helper fails; a lookup
            // that cannot be made is "not found" (pulls go anonymous).
            eprintln!("{HELPER_NAME}: {why}");
            None
        }),
        _ => None,
    };
    let output = helper_answer(action, found.as_ref(), env!("CARGO_PKG_VERSION"));
    // One line, as docker-credential-helpers' Go programs print it.
    if !output.stdout.is_empty() {
        println!("{}", output.stdout);
    }
    let _ = std::io::stdout().flush();
    if output.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ask(server_url: &str) -> Result<Option<RegistryCredential>, String> {
    let address = std::env::var(ADDRESS_VARIABLE).unwrap_or_else(|_| DEFAULT_ADDRESS.into());
    let socket: SocketAddr = address
        .to_socket_addrs()
        .map_err(|e| format!("{ADDRESS_VARIABLE} {address:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{ADDRESS_VARIABLE} {address:?} names no address"))?;
    let fail = |e: std::io::Error| format!("asking berth at {address}: {e}");
    let mut stream = TcpStream::connect_timeout(&socket, TIMEOUT).map_err(fail)?;
    stream.set_nodelay(true).map_err(fail)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
        lookup_target(server_url)
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(fail)?;
    let (status, body) = split_answer(&answer).ok_or("berth's answer is not HTTP")?;
    Ok(parse_lookup_answer(status, body))
}

/// The status and body of an HTTP/1.1 answer read to its end (the
/// connection closes after it; berth's lookup sends a content length).
fn split_answer(answer: &[u8]) -> Option<(u16, &[u8])> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, &answer[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_helper_is_known_by_its_name_or_subcommand() {
        assert_eq!(
            invoked_as(&args(&["/data/bin/docker-credential-portainer", "get"])).as_deref(),
            Some("get")
        );
        assert_eq!(
            invoked_as(&args(&["berth", "credential-helper", "list"])).as_deref(),
            Some("list")
        );
        assert_eq!(
            invoked_as(&args(&["docker-credential-portainer"])).as_deref(),
            Some("")
        );
        assert_eq!(invoked_as(&args(&["berth", "--port", "9001"])), None);
        assert_eq!(invoked_as(&args(&["berth"])), None);
    }

    #[test]
    fn answers_split_into_status_and_body() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(split_answer(answer), Some((200, &b"{}"[..])));
        assert_eq!(
            split_answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Some((204, &b""[..]))
        );
        assert_eq!(split_answer(b"garbage"), None);
    }
}
