//! The `fga.mod` manifest of a modular model: a small YAML file naming the
//! schema (`'1.2'`) and the module files (`contents`), read with positions
//! and checked as OpenFGA's `TransformModFile` checks it.
//!
//! Only the YAML this file needs is read: a top-level mapping whose values
//! are scalars (plain, single- or double-quoted) or sequences (block `- x`
//! items, or flow `[x, y]`), with `#` comments.

use crate::error::{AuthzError, ModelError, ModelErrorKind, Span};

/// A 0-based position range: lines and columns, start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModRange {
    /// First and last line.
    pub line: (usize, usize),
    /// Start column on the first line, end column on the last.
    pub column: (usize, usize),
}

/// A value of the manifest and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModValue<T> {
    /// The value.
    pub value: T,
    /// Its position.
    pub range: ModRange,
}

/// A parsed `fga.mod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModFile {
    /// The schema version (always `1.2`).
    pub schema: ModValue<String>,
    /// The module files, in order.
    pub contents: ModValue<Vec<ModValue<String>>>,
}

/// A YAML node: a scalar (with whether it resolves to a string) or a sequence.
#[derive(Debug, Clone)]
enum Node {
    Scalar {
        value: String,
        is_string: bool,
        range: ModRange,
    },
    Seq {
        items: Vec<Node>,
        range: ModRange,
    },
}

fn scalar_range(line: usize, col: usize, raw: &str) -> ModRange {
    ModRange {
        line: (line, line),
        column: (col, col + raw.chars().count()),
    }
}

/// Strip a trailing comment (` #...`) outside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => return s.get(..i).unwrap_or(s),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    s
}

/// Whether a plain scalar resolves to a non-string (YAML 1.2 core schema).
fn plain_is_string(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "null" | "~" | "" | ".inf" | "-.inf" | "+.inf" | ".nan"
    ) {
        return false;
    }
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    let is_int = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        || v.strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        || v.strip_prefix("0o")
            .is_some_and(|o| !o.is_empty() && o.chars().all(|c| matches!(c, '0'..='7')));
    !(is_int || v.parse::<f64>().is_ok() && v.chars().any(|c| c.is_ascii_digit()))
}

/// A scalar from its raw text at (line, col).
fn scalar(raw: &str, line: usize, col: usize) -> Node {
    let range = scalar_range(line, col, raw);
    let (value, is_string) =
        if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            (inner.replace("''", "'"), true)
        } else if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            (inner.replace("\\\"", "\"").replace("\\\\", "\\"), true)
        } else {
            (raw.to_owned(), plain_is_string(raw))
        };
    Node::Scalar {
        value,
        is_string,
        range,
    }
}

/// A flow sequence `[a, b]` starting at (line, col).
fn flow_seq(raw: &str, line: usize, col: usize) -> Node {
    let inner = raw.trim_start_matches('[').trim_end_matches(']');
    let mut items = Vec::new();
    let mut offset = col + 1;
    for part in inner.split(',') {
        let lead = part.chars().take_while(|c| c.is_whitespace()).count();
        let text = part.trim();
        if !text.is_empty() {
            items.push(scalar(text, line, offset + lead));
        }
        offset += part.chars().count() + 1;
    }
    Node::Seq {
        items,
        range: scalar_range(line, col, raw),
    }
}

/// Read the top-level mapping: key, node.
fn read_mapping(text: &str) -> Result<Vec<(String, Node)>, String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<(String, Node)> = Vec::new();
    let mut i = 0;
    while let Some(raw_line) = lines.get(i) {
        let line = strip_comment(raw_line).trim_end();
        if line.trim().is_empty() || line.trim_start() == "---" {
            i += 1;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(format!("unexpected indentation at line {}", i + 1));
        }
        let (key, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("expected 'key: value' at line {}", i + 1))?;
        let key = key.trim().trim_matches(['\'', '"']).to_owned();
        let lead = rest.chars().take_while(|c| c.is_whitespace()).count();
        let value = rest.trim();
        let col = key_len(line, rest) + lead;
        if value.starts_with('[') {
            out.push((key, flow_seq(value, i, col)));
            i += 1;
        } else if !value.is_empty() {
            out.push((key, scalar(value, i, col)));
            i += 1;
        } else {
            let (node, next) = block_seq(&lines, i + 1);
            out.push((key, node));
            i = next;
        }
    }
    Ok(out)
}

/// Column where the value part `rest` of `line` starts.
fn key_len(line: &str, rest: &str) -> usize {
    line.chars().count() - rest.chars().count()
}

/// A block sequence of `- item` lines from line `start`; returns the node
/// and the next line to read. An empty block is a null scalar.
fn block_seq(lines: &[&str], start: usize) -> (Node, usize) {
    let mut items = Vec::new();
    let mut i = start;
    let mut first: Option<(usize, usize)> = None;
    let mut end = start;
    while let Some(raw_line) = lines.get(i) {
        let line = strip_comment(raw_line).trim_end();
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        let indent = line.chars().take_while(|c| *c == ' ').count();
        let body = line.trim_start();
        let Some(item) = body.strip_prefix('-') else {
            break;
        };
        if indent == 0 && !body.starts_with("- ") && body != "-" {
            break;
        }
        first.get_or_insert((i, indent));
        let lead = item.chars().take_while(|c| c.is_whitespace()).count();
        items.push(scalar(item.trim(), i, indent + 1 + lead));
        i += 1;
        end = i;
    }
    match first {
        Some((line, col)) => {
            let range = ModRange {
                line: (line, end),
                column: (col, 0),
            };
            (Node::Seq { items, range }, i)
        }
        None => (
            Node::Scalar {
                value: String::new(),
                is_string: false,
                range: ModRange::default(),
            },
            i,
        ),
    }
}

fn error(message: String, range: ModRange) -> ModelError {
    ModelError {
        message,
        kind: ModelErrorKind::InvalidSchema,
        symbol: None,
        span: Some(Span {
            line: range.line.0,
            start_column: range.column.0,
            end_column: range.column.1,
        }),
    }
}

/// Whether a `contents` entry escapes the module directory.
fn escapes(path: &str) -> bool {
    let decoded = percent_decode(path).replace('\\', "/");
    let absolute = decoded.starts_with('/') || decoded.chars().nth(1) == Some(':');
    absolute || decoded.split('/').any(|seg| seg == "..")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse and check an `fga.mod` file.
pub fn parse_mod_file(text: &str) -> Result<ModFile, AuthzError> {
    let entries = read_mapping(text).map_err(|m| AuthzError::model(ModelErrorKind::Syntax, m))?;
    let get = |k: &str| {
        entries
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, n)| n)
    };
    let mut errors = Vec::new();
    let schema = match get("schema") {
        None => {
            errors.push(error("missing schema field".into(), ModRange::default()));
            None
        }
        Some(Node::Scalar {
            value,
            is_string,
            range,
        }) => {
            if !is_string {
                let msg = format!("unexpected schema type, expected string got value {value}");
                errors.push(error(msg, *range));
                None
            } else if value != "1.2" {
                let msg = "unsupported schema version, fga.mod only supported in version `1.2`";
                errors.push(error(msg.into(), *range));
                None
            } else {
                Some(ModValue {
                    value: value.clone(),
                    range: *range,
                })
            }
        }
        Some(Node::Seq { range, .. }) => {
            let msg = "unexpected schema type, expected string got value ".to_owned();
            errors.push(error(msg, *range));
            None
        }
    };
    let contents = match get("contents") {
        None => {
            errors.push(error("missing contents field".into(), ModRange::default()));
            None
        }
        Some(Node::Scalar { value, range, .. }) => {
            let msg =
                format!("unexpected contents type, expected list of strings got value {value}");
            errors.push(error(msg, *range));
            None
        }
        Some(Node::Seq { items, range }) => Some(ModValue {
            value: contents_items(items, &mut errors),
            range: *range,
        }),
    };
    match (schema, contents) {
        (Some(schema), Some(contents)) if errors.is_empty() => Ok(ModFile { schema, contents }),
        _ => Err(AuthzError::InvalidModel(errors)),
    }
}

fn contents_items(items: &[Node], errors: &mut Vec<ModelError>) -> Vec<ModValue<String>> {
    let mut out = Vec::new();
    for item in items {
        let (value, is_string, range) = match item {
            Node::Scalar {
                value,
                is_string,
                range,
            } => (value.clone(), *is_string, *range),
            Node::Seq { range, .. } => (String::new(), false, *range),
        };
        if !is_string {
            let msg = format!("unexpected contents item type, expected string got value {value}");
            errors.push(error(msg, range));
        } else if !value.ends_with(".fga") {
            let msg = format!("contents items should use fga file extension, got {value}");
            errors.push(error(msg, range));
        } else if escapes(&value) {
            errors.push(error(format!("invalid contents item {value}"), range));
        }
        out.push(ModValue { value, range });
    }
    out
}
