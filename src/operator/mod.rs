//! The commands for the person at the terminal: `berth doctor`, `berth
//! status`, `berth keys new`, shell completions and the man page.

pub mod doctor;
pub mod keys;
pub mod status;
