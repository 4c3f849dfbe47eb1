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
