//! Syntax errors exactly as OpenFGA reports them.
//!
//! OpenFGA parses the DSL with an ANTLR grammar, and its syntax error
//! messages ("extraneous input ' ' expecting {...}", "no viable alternative
//! at input ...") come from ANTLR's error strategy. This module reproduces
//! that machinery for OpenFGA's grammar: a lexer with ANTLR's longest-match
//! rules, the grammar compiled to an ATN, ANTLR's adaptive prediction, and
//! its recovery (single-token deletion and insertion, resynchronisation on
//! follow sets). The messages, lines and columns are therefore the ones
//! OpenFGA gives for the same input. The model itself is built by the
//! hand-written parser in `super::parser`.

mod atn;
mod grammar;
mod lexer;
mod parser;
mod predict;
mod tokens;

use std::sync::OnceLock;

use crate::error::{ModelError, ModelErrorKind, Span};

fn grammar() -> &'static atn::Atn {
    static ATN: OnceLock<atn::Atn> = OnceLock::new();
    ATN.get_or_init(atn::Atn::build)
}

/// The text OpenFGA's tools hand to ANTLR: each line without a trailing
/// ` #` comment and without trailing whitespace.
fn clean(src: &str) -> String {
    src.split('\n')
        .map(|line| line.split(" #").next().unwrap_or_default().trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

fn error_at(message: String, symbol: &str, line: usize, col: usize) -> ModelError {
    ModelError {
        message,
        kind: ModelErrorKind::Syntax,
        symbol: Some(symbol.to_owned()),
        span: Some(Span {
            line,
            start_column: col,
            end_column: col + symbol.chars().count(),
        }),
    }
}

/// The first `(` nested deeper than [`MAX_NESTING`], if any. Prediction
/// looks ahead to the matching `)` at every level, so depth is bounded first.
fn too_deep(tokens: &[lexer::Token]) -> Option<&lexer::Token> {
    let mut depth = 0usize;
    for t in tokens {
        match t.ttype {
            tokens::LPAREN => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(t);
                }
            }
            tokens::RPAREN => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Deepest nesting of parentheses accepted (the model parser's limit too).
const MAX_NESTING: usize = 64;

/// The syntax errors OpenFGA reports for `src`; empty when the DSL is
/// syntactically valid.
pub fn syntax_errors(src: &str) -> Vec<ModelError> {
    let cleaned = clean(src);
    let (tokens, lex_errors) = lexer::tokenize(&cleaned);
    let mut errors: Vec<ModelError> = lex_errors
        .iter()
        .map(|e| {
            let msg = format!("token recognition error at: '{}'", e.text);
            error_at(msg, &e.text, e.line, e.col)
        })
        .collect();
    if let Some(t) = too_deep(&tokens) {
        errors.push(error_at(
            "relation definition nested too deeply".to_owned(),
            &t.text,
            t.line,
            t.col,
        ));
        return errors;
    }
    let mut rec = parser::Recognizer::new(grammar(), &tokens);
    let outcome = rec.run();
    let at = |i: usize| tokens.get(i).or(tokens.last());
    for e in &rec.errors {
        if let Some(t) = at(e.token) {
            errors.push(error_at(e.message.clone(), &t.text, t.line, t.col));
        }
    }
    if let Err(msg) = outcome
        && let Some(t) = tokens.last()
    {
        errors.push(error_at(msg, &t.text, t.line, t.col));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::syntax_errors;

    const MODEL: &str = "model\n  schema 1.1\ntype user\ntype team\n  relations\n    define member: [user, team#member]\ntype doc\n  relations\n    define parent: [doc]\n    define owner: [user with in_office] or member from parent\n    define viewer: ([user, user:*] or owner) but not blocked\n    define blocked: [user]\n    define member: [team#member] and (owner or viewer from parent)\ncondition in_office(ip: ipaddress, allowed: list<string>) {\n  ip.in_cidr(\"10.0.0.0/8\") && \"x\" in allowed\n}\n";

    fn nested(depth: usize) -> String {
        format!(
            "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define a: [user]\n    define b: {}a{}\n",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    }

    #[test]
    fn valid_models_have_no_syntax_errors() {
        assert!(
            syntax_errors(MODEL).is_empty(),
            "{:?}",
            syntax_errors(MODEL)
        );
        for d in [1usize, 2, 4, 8, 16, 32, 64] {
            let e = syntax_errors(&nested(d));
            assert!(e.is_empty(), "{d}: {e:?}");
        }
    }

    #[test]
    fn pathological_inputs_end_in_errors_quickly() {
        let start = std::time::Instant::now();
        for input in [
            nested(5000),
            format!("{}\n", "(".repeat(20_000)),
            format!(
                "model\n  schema 1.1\ntype doc\n  relations\n    define a: {}b\n",
                "b or ".repeat(3000)
            ),
            "\u{0}\u{1}#[[[[]]]]{{{{}}}}".repeat(500),
            format!(
                "model\n  schema 1.1\ncondition c(x: {}string{}) {{ x }}\n",
                "map<".repeat(200),
                ">".repeat(200)
            ),
        ] {
            let _ = syntax_errors(&input);
        }
        assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
        assert!(!syntax_errors(&nested(5000)).is_empty());
    }

    #[test]
    fn mutated_models_never_panic() {
        let bytes: Vec<char> = MODEL.chars().collect();
        let alphabet: Vec<char> = "()[]{}#:,*<> \n\tabortdefine".chars().collect();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let start = std::time::Instant::now();
        for _ in 0..500 {
            let mut text = bytes.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % text.len().max(1);
                match next() % 3 {
                    0 => {
                        text.remove(at.min(text.len().saturating_sub(1)));
                    }
                    1 => text.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => {
                        let i = at.min(text.len() - 1);
                        text[i] = alphabet[(next() as usize) % alphabet.len()];
                    }
                }
            }
            let s: String = text.into_iter().collect();
            let _ = syntax_errors(&s);
        }
        assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    }
}
