//! Task status notifications on a 2026-07-28 `subscriptions/listen` stream: the tasks a client
//! names in `notifications.taskIds` (its own, on this endpoint) are followed for it, and each
//! change goes out as `notifications/tasks` carrying what `tasks/get` would answer.
//!
//! Following a task is looking at it: an approved call runs for the client that follows it
//! (in a task of its own, so a stream that closes mid-run does not cut the call short), and a
//! denied, expired or switched-off one ends. The stream looks when an approval is decided in
//! this process and every poll interval otherwise, so decisions taken on other replicas
//! arrive too.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use store::TaskRecord;
use tokio::sync::mpsc;

use super::{Flavor, advance, find, wire};
use crate::call::Call;
use crate::gateway::Gateway;
use crate::refusal::Refusal;

/// The tasks a listen request asks to follow that are this caller's: the rest are left out of
/// the acknowledgement, as ids that do not exist would be.
pub(crate) async fn wanted(gw: &Gateway, call: &Call, params: Option<&Value>) -> Vec<TaskRecord> {
    let ids = params
        .and_then(|p| p.get("notifications"))
        .and_then(|n| n.get("taskIds"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut found = Vec::new();
    // A bounded list: a stream follows at most a page of tasks.
    for id in ids.iter().filter_map(Value::as_str).take(50) {
        if let Ok(rec) = find(gw, call, id).await
            && !found.iter().any(|r: &TaskRecord| r.id == rec.id)
        {
            found.push(rec);
        }
    }
    found
}

struct Following {
    gw: Arc<Gateway>,
    call: Arc<Call>,
    tasks: Vec<(TaskRecord, (String, Option<String>))>,
    sub_meta: Value,
}

fn seen(flavor: Flavor, rec: &TaskRecord) -> (String, Option<String>) {
    (wire::status(flavor, rec).to_string(), rec.message.clone())
}

/// `notifications/tasks` for each change to `tasks`, until every one has ended.
pub(crate) fn follow(
    gw: Arc<Gateway>,
    call: Call,
    tasks: Vec<TaskRecord>,
    sub_meta: Value,
) -> impl Stream<Item = Value> {
    let tasks = tasks
        .into_iter()
        .map(|r| {
            let s = seen(Flavor::Extension, &r);
            (r, s)
        })
        .collect();
    let state = Following {
        gw,
        call: Arc::new(call),
        tasks,
        sub_meta,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.tasks.is_empty() {
                return None;
            }
            tokio::select! {
                () = st.gw.approval_decided.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wire::POLL_MS.unsigned_abs())) => {}
            }
            let notes = look(&mut st).await;
            if !notes.is_empty() {
                return Some((futures::stream::iter(notes), st));
            }
        }
    })
    .flatten()
}

/// Look at each followed task once; the notifications for those that changed.
async fn look(st: &mut Following) -> Vec<Value> {
    let mut notes = Vec::new();
    let mut kept = Vec::new();
    for (rec, last) in std::mem::take(&mut st.tasks) {
        let (gw, call) = (st.gw.clone(), st.call.clone());
        let rec_again = rec.clone();
        let id = json!(format!("follow:{}", rec.id));
        // Its own task: a stream closed meanwhile does not stop a call that started.
        let looked = st.gw.detached.spawn(async move {
            let (sink, mut rx) = mpsc::unbounded_channel();
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let now = find(&gw, &call, &rec.id).await?;
            advance(&gw, &call, &id, now, &sink).await
        });
        let now = match looked.await {
            Ok(Ok(now)) => now,
            // Gone (expired): no longer followed.
            Ok(Err(Refusal::UnknownTask)) => continue,
            // Unreadable now, or the look failed: looked at again next time.
            _ => {
                kept.push((rec_again, last));
                continue;
            }
        };
        let s = seen(Flavor::Extension, &now);
        if s != last {
            let mut params = wire::task(Flavor::Extension, &now);
            if let Some(o) = params.as_object_mut() {
                o.insert("_meta".into(), st.sub_meta.clone());
            }
            notes.push(crate::jsonrpc::notification("notifications/tasks", params));
        }
        if !now.status.is_terminal() {
            kept.push((now, s));
        }
    }
    st.tasks = kept;
    notes
}
