use super::workers;

#[test]
fn one_serving_worker_per_core_but_one_by_default_and_one_at_least() {
    assert_eq!(workers(None, 16), Ok(15));
    assert_eq!(workers(None, 2), Ok(1));
    assert_eq!(workers(None, 1), Ok(1));
    assert_eq!(workers(None, 0), Ok(1));
    assert_eq!(workers(Some("4"), 2), Ok(4));
    assert_eq!(workers(Some(" 3 "), 16), Ok(3));
    assert_eq!(workers(Some("1"), 16), Ok(1));
    assert_eq!(workers(Some("4096"), 2), Ok(4096));
    for bad in ["0", "-1", "two", "", "4097", "18446744073709551615"] {
        let e = workers(Some(bad), 4).unwrap_err();
        assert!(
            e.contains("TOKIO_WORKER_THREADS") && e.contains("fix:"),
            "{e}"
        );
    }
}
