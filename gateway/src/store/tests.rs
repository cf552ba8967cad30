use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (dir, Store::open(&url).await.unwrap())
}

#[tokio::test]
async fn issued_key_verifies_and_revocation_sticks() {
    let (_d, s) = store().await;
    let k = s
        .create_key("ci", KeyRole::Client, KeyScope::default())
        .await
        .unwrap();
    let found = s.verify_key(&k.secret).await.unwrap().unwrap();
    assert_eq!(found.id, k.record.id);
    assert_eq!(found.role, KeyRole::Client);
    assert!(s.revoke_key(&k.record.id).await.unwrap());
    assert!(s.verify_key(&k.secret).await.unwrap().is_none());
    assert!(!s.revoke_key(&k.record.id).await.unwrap());
}

#[tokio::test]
async fn wrong_secret_and_garbage_do_not_verify() {
    let (_d, s) = store().await;
    let k = s
        .create_key("ci", KeyRole::Client, KeyScope::default())
        .await
        .unwrap();
    let mut forged = k.secret.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    assert!(s.verify_key(&forged).await.unwrap().is_none());
    assert!(s.verify_key("").await.unwrap().is_none());
    assert!(s.verify_key("pcl__").await.unwrap().is_none());
    assert!(s.verify_key("Bearer something").await.unwrap().is_none());
}

#[tokio::test]
async fn secret_is_not_stored() {
    let (dir, s) = store().await;
    let k = s
        .create_key("ci", KeyRole::Admin, KeyScope::default())
        .await
        .unwrap();
    drop(s);
    let (_, secret) = parse_key(&k.secret).unwrap();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains(secret));
}

#[tokio::test]
async fn scope_round_trips_and_old_stores_gain_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        // A store as the first release wrote it.
        use sqlx::sqlite::SqliteConnectOptions;
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER)")
            .execute(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO api_keys VALUES ('00000000000000aa', 'x', 'old', 'client', 1, NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let s = Store::open(&url).await.unwrap();
    let old = s.key("00000000000000aa").await.unwrap().unwrap();
    assert_eq!(old.scope, KeyScope::default());
    let scope = KeyScope {
        org: Some("acme".into()),
        team: Some("research".into()),
        agent: Some("bot".into()),
        grants: vec!["notes/*".into()],
        service: true,
        parent: Some("00000000000000aa".into()),
    };
    let k = s
        .create_key("new", KeyRole::Client, scope.clone())
        .await
        .unwrap();
    let found = s.verify_key(&k.secret).await.unwrap().unwrap();
    assert_eq!(found.scope, scope);
}
