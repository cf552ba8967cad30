//! Tool names on the wire, and the federated `<server>__<tool>` form.
//!
//! Names compare byte for byte. There is no case folding and no Unicode normalisation, so a name
//! that differs from a registered one by case, a homoglyph or a zero-width character is simply a
//! different (and therefore unknown) name.

/// The separator between server and tool in a federated name.
const SEPARATOR: &str = "__";

/// The longest name every common client accepts.
const MAX_WIRE_LEN: usize = 64;

/// A federated name split into its server and tool parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FederatedName<'a> {
    /// The server's name in the registry.
    pub server: &'a str,
    /// The tool's (or prompt's) name on that server.
    pub name: &'a str,
}

/// True when `name` matches `^[A-Za-z0-9_-]{1,64}$`, the form every common client accepts.
pub fn is_wire_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_WIRE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Split `<server>__<name>` at the first separator.
///
/// Server names never contain `_` (the registry refuses them), so the first `__` is the only
/// place the split can be. Returns `None` when there is no separator or either side is empty.
pub fn split_federated(name: &str) -> Option<FederatedName<'_>> {
    let (server, rest) = name.split_once(SEPARATOR)?;
    if server.is_empty() || rest.is_empty() {
        return None;
    }
    Some(FederatedName { server, name: rest })
}

#[cfg(test)]
mod tests;
