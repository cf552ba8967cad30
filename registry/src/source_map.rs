//! YAML to JSON values, remembering where every key and value came from.
//!
//! The config is parsed with a YAML parser that keeps spans; the tree is turned into a
//! `serde_json::Value` (which typed deserialization reads) plus a [`SourceMap`] from dotted paths
//! to locations, so that every later error, typed or semantic, can name file, line and column.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::error::{ConfigError, ConfigProblem, Location};

/// Where each path of a loaded config is in its file.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    file: String,
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
}

// === impl SourceMap ===

impl SourceMap {
    /// The file name used in locations.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where the value at `path` starts, falling back to its nearest ancestor.
    pub fn value(&self, path: &str) -> Location {
        self.lookup(&self.values, path)
    }

    /// Where the key of `path` is written (for "unknown key" errors), falling back to its value.
    pub fn key(&self, path: &str) -> Location {
        match self.keys.get(path) {
            Some(&(line, column)) => self.at(line, column),
            None => self.value(path),
        }
    }

    /// True when the file spells out `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.values.contains_key(path)
    }

    fn lookup(&self, table: &HashMap<String, (usize, usize)>, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some(&(line, column)) = table.get(p) {
                return self.at(line, column);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = p.get(..i).unwrap_or(""),
                None => return self.at(1, 1),
            }
        }
    }

    fn at(&self, line: usize, column: usize) -> Location {
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    /// A problem located at the value of `path`.
    pub(crate) fn problem(&self, path: &str, message: String, fix: &str) -> ConfigProblem {
        ConfigProblem {
            location: self.value(path),
            path: path.to_string(),
            message,
            fix: fix.to_string(),
        }
    }
}

/// Join a child key onto a dotted path.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Parse YAML text into a JSON value and its source map.
pub(crate) fn parse(file: &str, text: &str) -> Result<(Value, SourceMap), ConfigError> {
    let mut map = SourceMap {
        file: file.to_string(),
        ..SourceMap::default()
    };
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        ConfigError::Invalid(vec![ConfigProblem {
            location: Location {
                file: file.to_string(),
                line: m.line(),
                column: m.col() + 1,
            },
            path: String::new(),
            message: format!("YAML syntax error: {}", e.info()),
            fix: "correct the YAML syntax at this position".to_string(),
        }])
    })?;
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Err(ConfigError::Invalid(vec![ConfigProblem {
            location: Location { file: file.to_string(), line: 1, column: 1 },
            path: String::new(),
            message: "the config file is empty".to_string(),
            fix: "start from the config `portcullis quickstart` writes, or see the config reference in README.md".to_string(),
        }]));
    };
    if let Some(extra) = docs.next() {
        let s = extra.span.start;
        return Err(ConfigError::Invalid(vec![ConfigProblem {
            location: Location {
                file: file.to_string(),
                line: s.line(),
                column: s.col() + 1,
            },
            path: String::new(),
            message: "the file holds more than one YAML document".to_string(),
            fix: "keep one document per config file (remove the `---` separator)".to_string(),
        }]));
    }
    let mut problems = Vec::new();
    let value = convert(&doc, "", &mut map, &mut problems);
    if problems.is_empty() {
        Ok((value, map))
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn convert(
    node: &MarkedYaml<'_>,
    path: &str,
    map: &mut SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Value {
    let start = node.span.start;
    map.values
        .insert(path.to_string(), (start.line(), start.col() + 1));
    match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &format!("{path}[{i}]"), map, problems))
                .collect(),
        ),
        YamlData::Mapping(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(other) => match scalar_value(other) {
                        Value::String(s) => s,
                        v => v.to_string(),
                    },
                    _ => {
                        let s = k.span.start;
                        problems.push(ConfigProblem {
                            location: Location {
                                file: map.file.clone(),
                                line: s.line(),
                                column: s.col() + 1,
                            },
                            path: path.to_string(),
                            message: "mapping keys must be plain scalars".to_string(),
                            fix: "write the key as a plain string".to_string(),
                        });
                        continue;
                    }
                };
                let p = child(path, &key);
                let ks = k.span.start;
                map.keys.insert(p.clone(), (ks.line(), ks.col() + 1));
                let v = convert(v, &p, map, problems);
                // A value's own position is where it starts; an empty value has none, so it takes
                // its key's place.
                map.values.entry(p).or_insert((ks.line(), ks.col() + 1));
                out.insert(key, v);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => convert(inner, path, map, problems),
        YamlData::Alias(_) | YamlData::BadValue => {
            problems.push(map.problem(
                path,
                "this value could not be read".to_string(),
                "write the value out in full; aliases and unknown tags are not supported",
            ));
            Value::Null
        }
    }
}

fn scalar_value(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => {
            Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
        }
        Scalar::String(s) => Value::String(s.to_string()),
    }
}
