use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (dir, Store::open(&url).await.unwrap())
}

#[tokio::test]
async fn issued_key_verifies_and_revocation_sticks() {
    let (_d, s) = store().await;
    let k = s.create_key("ci", KeyRole::Client).await.unwrap();
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
    let k = s.create_key("ci", KeyRole::Client).await.unwrap();
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
    let k = s.create_key("ci", KeyRole::Admin).await.unwrap();
    drop(s);
    let (_, secret) = parse_key(&k.secret).unwrap();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains(secret));
}
