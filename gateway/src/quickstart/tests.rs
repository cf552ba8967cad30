use super::*;

#[test]
fn the_written_config_passes_check() {
    let reg = registry::load_str("portcullis.yaml", &config_text(18480)).unwrap();
    let problems = registry::check(&reg);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_port_moves_both_listen_lines_and_nothing_else() {
    let text = config_text(8080);
    let moved = with_port(&text, 9000);
    assert!(moved.contains("\nlisten: 127.0.0.1:9000\n"));
    assert!(moved.contains("\nadmin_listen: 127.0.0.1:9001\n"));
    assert_eq!(moved.lines().count(), text.lines().count());
    assert_eq!(with_port(&moved, 8080), text);
}
