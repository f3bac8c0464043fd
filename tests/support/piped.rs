//! Running a program with what it reads on stdin given, and its output
//! kept.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `command` with `input` on its stdin (closed after it). A program
/// may end without reading its input (a credential helper's `store`): the
/// broken pipe that leaves is not a failure; what it answered is.
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    if let Err(error) = written {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing to {command:?}"
        );
    }
    child.wait_with_output().unwrap()
}
