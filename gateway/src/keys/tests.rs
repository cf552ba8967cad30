use super::*;

const CONFIG: &str = "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      create_note: { class: write }\n  files:\n    url: https://notes.example.com/mcp\n    tools: { read: { class: read } }\n";

async fn setup() -> (tempfile::TempDir, Store, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap();
    (dir, store, registry::load_str("t.yaml", CONFIG).unwrap())
}

fn client(name: &str, grants: &[&str]) -> MintRequest {
    MintRequest {
        name: name.into(),
        role: KeyRole::Client,
        scope: KeyScope {
            org: Some("acme".into()),
            team: Some("research".into()),
            grants: grants.iter().map(|g| (*g).to_owned()).collect(),
            ..KeyScope::default()
        },
    }
}

fn refusal(r: Result<IssuedKey, MintError>) -> String {
    match r {
        Err(MintError::Refused(why)) => why,
        Err(e) => panic!("store error {e}"),
        Ok(_) => panic!("issued"),
    }
}

#[tokio::test]
async fn grants_must_name_allowlisted_tools() {
    let (_d, store, reg) = setup().await;
    assert!(refusal(mint(&store, &reg, client("a", &[])).await).contains("at least one grant"));
    assert!(refusal(mint(&store, &reg, client("a", &["nope/*"])).await).contains("not configured"));
    assert!(
        refusal(mint(&store, &reg, client("a", &["notes/Search_notes"])).await)
            .contains("allowlist")
    );
    assert!(refusal(mint(&store, &reg, client("a", &["notes"])).await).contains("grant"));
    let k = mint(&store, &reg, client("a", &["notes/*"])).await.unwrap();
    assert_eq!(k.record.scope.grants, ["notes/*"]);
}

#[tokio::test]
async fn a_child_is_never_wider_than_its_parent() {
    let (_d, store, reg) = setup().await;
    let parent = mint(
        &store,
        &reg,
        client("p", &["notes/search_notes", "files/*"]),
    )
    .await
    .unwrap();
    let child = |grants: &[&str]| {
        let mut r = client("c", grants);
        r.scope.org = None;
        r.scope.team = None;
        r.scope.parent = Some(parent.record.id.clone());
        r
    };
    for wider in [
        &["notes/*"][..],
        &["notes/create_note"],
        &["files/read", "notes/create_note"],
    ] {
        assert!(
            refusal(mint(&store, &reg, child(wider)).await).contains("wider"),
            "{wider:?}"
        );
    }
    let ok = mint(&store, &reg, child(&["files/read"])).await.unwrap();
    assert_eq!(
        ok.record.scope.org.as_deref(),
        Some("acme"),
        "org is inherited"
    );
    assert_eq!(
        ok.record.scope.parent.as_deref(),
        Some(parent.record.id.as_str())
    );
    let mut other_org = child(&["files/read"]);
    other_org.scope.org = Some("globex".into());
    assert!(refusal(mint(&store, &reg, other_org).await).contains("org must be the parent's"));
    let mut service = child(&["files/read"]);
    service.scope.service = true;
    assert!(refusal(mint(&store, &reg, service).await).contains("service"));
    store.revoke_key(&parent.record.id).await.unwrap();
    assert!(refusal(mint(&store, &reg, child(&["files/read"])).await).contains("no active"));
}

#[tokio::test]
async fn operator_keys_that_approve_name_their_holder_and_service_keys_name_no_user() {
    let (_d, store, reg) = setup().await;
    let operator = |role, user: Option<&str>| MintRequest {
        name: "op".into(),
        role,
        scope: KeyScope {
            user: user.map(str::to_owned),
            ..KeyScope::default()
        },
    };
    for role in [KeyRole::Admin, KeyRole::Approver] {
        assert!(refusal(mint(&store, &reg, operator(role, None)).await).contains("--user"));
        assert!(
            mint(&store, &reg, operator(role, Some("bob")))
                .await
                .is_ok()
        );
    }
    assert!(
        mint(&store, &reg, operator(KeyRole::Auditor, None))
            .await
            .is_ok()
    );
    let mut admin = operator(KeyRole::Admin, Some("bob"));
    admin.scope.grants = vec!["notes/*".into()];
    assert!(refusal(mint(&store, &reg, admin).await).contains("at most the person"));
    let mut service = client("svc", &["notes/*"]);
    service.scope.service = true;
    service.scope.user = Some("alice".into());
    assert!(refusal(mint(&store, &reg, service).await).contains("cannot also carry"));
}
