//! The fuzz targets' seed corpora, run as ordinary tests.

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "corpus {target} has too few seeds");
    out
}

#[test]
fn tool_definition_corpus() {
    for (_name, data) in corpus("tool_definition") {
        super::tool_definition(&data);
    }
}

#[test]
fn reference_corpus() {
    for (_name, data) in corpus("reference") {
        super::reference(&data);
    }
}

#[test]
fn config_corpus() {
    for (_name, data) in corpus("config") {
        super::config(&data);
    }
}

#[test]
fn untrusted_text_corpus() {
    for (_name, data) in corpus("untrusted_text") {
        super::untrusted_text(&data);
    }
}

#[test]
fn answer_depth_corpus() {
    for (_name, data) in corpus("answer_depth") {
        super::answer_depth(&data);
    }
}
