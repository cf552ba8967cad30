//! `portcullis`: an MCP gateway that fails closed.
//!
//! The binary's entry point: command-line parsing and exit codes. Everything else lives in the
//! modules named in ARCHITECTURE.md.

mod admin;
mod approvals;
mod auth;
mod authorize;
mod call;
mod catalog;
mod cli;
mod command;
mod demo;
mod dispatch;
mod front;
mod gateway;
mod jsonrpc;
mod keys;
mod levers;
mod limits;
mod listen;
mod metrics;
mod operate;
mod operator_cli;
mod pin;
mod quickstart;
mod refusal;
mod reload;
mod secrets;
mod selfaudit;
mod serve;
mod session;
mod telemetry;
mod tools;
mod upstream;

// Times and redaction as the audit log writes them, used across the gateway.
use audit::{clock, redact};

use std::process::ExitCode;

#[cfg(test)]
mod tests;

fn main() -> ExitCode {
    cli::main()
}
