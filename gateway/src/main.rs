//! `portcullis`: an MCP gateway that fails closed.
//!
//! The binary's entry point: command-line parsing and exit codes. Everything else lives in the
//! modules named in ARCHITECTURE.md.

mod admin;
mod approvals;
mod audit;
mod auth;
mod authorize;
mod catalog;
mod cli;
mod clock;
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
mod param_headers;
mod pin;
mod quickstart;
mod redact;
mod reload;
mod secrets;
mod selfaudit;
mod serve;
mod session;
mod telemetry;
mod upstream;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
