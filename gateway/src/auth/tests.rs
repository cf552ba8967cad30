use super::*;

async fn setup() -> (tempfile::TempDir, Store, Authenticator) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .await
        .unwrap();
    let auth = Authenticator::new(store.clone());
    (dir, store, auth)
}

#[tokio::test]
async fn store_failure_is_a_refusal_never_an_identity() {
    let (_d, store, auth) = setup().await;
    let key = store.create_key("k", KeyRole::Client).await.unwrap();
    // Fault: the store stops answering before the key was ever seen (nothing cached).
    store.close().await;
    match auth.client(Some(&format!("Bearer {}", key.secret))).await {
        Err(AuthError::Unavailable(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_wrong_and_admin_credentials_are_refused() {
    let (_d, store, auth) = setup().await;
    let admin = store.create_key("a", KeyRole::Admin).await.unwrap();
    let client = store.create_key("c", KeyRole::Client).await.unwrap();
    assert!(matches!(auth.client(None).await, Err(AuthError::Missing)));
    assert!(matches!(
        auth.client(Some("Bearer ")).await,
        Err(AuthError::Missing)
    ));
    assert!(matches!(
        auth.client(Some(&client.secret)).await,
        Err(AuthError::Missing)
    ));
    assert!(matches!(
        auth.client(Some("Bearer pcl_x_y")).await,
        Err(AuthError::Invalid)
    ));
    let admin_header = format!("Bearer {}", admin.secret);
    assert!(matches!(
        auth.client(Some(&admin_header)).await,
        Err(AuthError::WrongRole)
    ));
    let id = auth
        .client(Some(&format!("Bearer {}", client.secret)))
        .await
        .unwrap();
    assert_eq!(id.key_id, client.record.id);
}
