//! Portcullis: an MCP gateway that fails closed.
//!
//! As a library, it is the gateway the `portcullis` binary runs: [`start`] assembles one from a
//! validated config, [`app`] and [`admin_app`] are its two routers (usable in-process, e.g. with
//! `tower::ServiceExt::oneshot`), and [`serve`] serves them on two listeners until shutdown.
//! [`main`] is the command line. Everything else lives in the modules named in ARCHITECTURE.md.

mod admin;
mod approvals;
mod auth;
mod authorize;
mod call;
mod catalog;
mod cli;
mod command;
mod credentials;
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
mod reserve;
mod secrets;
mod selfaudit;
mod serve;
mod session;
mod telemetry;
mod tools;
mod upstream;

// Times and redaction as the audit log writes them, used across the gateway.
use audit::{clock, redact};

pub use serve::{State, Unready, admin_app, app, serve, start};

/// The `portcullis` command line: parse the arguments and run the command.
pub fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(test)]
mod tests;
