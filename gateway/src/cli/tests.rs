use super::workers;

#[test]
fn two_workers_at_least_one_per_core_by_default() {
    assert_eq!(workers(None, 16), Ok(16));
    assert_eq!(workers(None, 2), Ok(2));
    assert_eq!(workers(None, 1), Ok(2));
    assert_eq!(workers(Some("4"), 2), Ok(4));
    assert_eq!(workers(Some(" 3 "), 16), Ok(3));
    for bad in ["1", "0", "-1", "two", ""] {
        let e = workers(Some(bad), 4).unwrap_err();
        assert!(
            e.contains("TOKIO_WORKER_THREADS") && e.contains("fix:"),
            "{e}"
        );
    }
}
