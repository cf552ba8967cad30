//! Step 8, credential: the token a call carries to its upstream when the server's credentials
//! are minted (`token_exchange`: the caller's IdP token exchanged for one issued to the
//! upstream; `client_credentials`: the gateway's own). Other servers' credentials are their
//! connection's own, resolved by reference when it opens (`upstream/connect.rs`). A token that
//! cannot be minted refuses the call: nothing else is ever sent in its place.

use std::sync::Arc;

use serde_json::json;

use super::{Call, Trail};
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::upstream::Upstream;

/// The token for a call by `call`'s caller to `up` (`what` names it in a refusal), if the
/// server's credentials are minted; what the record says about it goes on `trail`.
pub(super) async fn mint(
    gw: &Gateway,
    call: &Call,
    up: &Upstream,
    what: &str,
    trail: Option<&mut Trail>,
) -> Result<Option<Arc<str>>, Refusal> {
    let config = up.config();
    let Some(minted) = &config.minted else {
        return Ok(None);
    };
    let server = up.name();
    let minter = gw.upstreams().minter().clone();
    let caller = &call.caller;
    let kind = match minted {
        registry::Minted::Exchange { .. } if caller.token.is_some() => "exchange",
        _ => "client_credentials",
    };
    let span = crate::telemetry::credential_span(server, kind);
    let got = minter
        .for_call(server, minted, &caller.subject, caller.token.as_deref())
        .await;
    let shown = got
        .as_ref()
        .map(|t| if t.cached { "cached" } else { "minted" })
        .map_err(|e| e.to_string());
    crate::telemetry::finish_credential(&span, shown.as_ref().copied().map_err(String::as_str));
    let client = minted.client();
    let target = client
        .audience
        .as_deref()
        .or(client.resource.as_deref())
        .unwrap_or("");
    match got {
        Ok(token) => {
            let outcome = if token.cached { "cached" } else { "minted" };
            crate::metrics::get().credential(server, token.kind, outcome);
            if let Some(t) = trail {
                t.credential = Some(json!({
                    "kind": token.kind,
                    "audience": target,
                    "scope": token.scope,
                    "cached": token.cached,
                }));
            }
            Ok(Some(token.value))
        }
        Err(e) => {
            crate::metrics::get().credential(server, kind, "refused");
            tracing::warn!(subject = %caller.subject, server, error = %e, "call refused: no upstream credential");
            Err(Refusal::CredentialUnavailable {
                name: what.to_string(),
                error: e.to_string(),
            })
        }
    }
}
