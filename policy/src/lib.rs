//! Pure policy for Portcullis.
//!
//! This crate decides; it never performs I/O, never awaits and never reads a clock. Everything a
//! decision depends on is an argument. The gateway asks this crate, it does not decide itself.
//!
//! - [`Identity`]: who is calling, level by level (org, team, key, user, agent).
//! - [`GrantTable`], [`Rules`], [`Pattern`]: what each principal is granted and denied.
//! - [`decide`]: the intersection of every resolved level's grants, explicit denies winning.
//! - [`token`]: bearer tokens and claims (untrusted bytes), mapped to identity levels.

mod class;
mod decide;
mod grants;
mod identity;
mod names;
pub mod token;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use class::{ToolClass, UnknownClassError, UpstreamHints};
pub use decide::{
    Approval, ArgumentsDigest, Decision, Denial, DenyReason, Policy, Request, decide,
};
pub use grants::{GrantTable, Pattern, PatternError, Rules, Target};
pub use identity::{Binding, Identity, Level, PerLevel, UnknownLevelError};
pub use names::{FederatedName, is_wire_tool_name, split_federated};
