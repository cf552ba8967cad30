//! Tests about the crate as a whole.

mod layers;
mod pipeline;
