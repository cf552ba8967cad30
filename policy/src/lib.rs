//! Pure policy for Portcullis.
//!
//! This crate decides; it never performs I/O, never awaits and never reads a clock. Everything a
//! decision depends on is an argument. The gateway asks this crate, it does not decide itself.

mod class;
mod names;

pub use class::{ToolClass, UpstreamHints};
pub use names::{FederatedName, is_wire_tool_name, split_federated};
