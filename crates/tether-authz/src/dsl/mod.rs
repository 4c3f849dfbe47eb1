//! The OpenFGA DSL: scanner, parser and printer.

mod antlr;
mod parser;
mod printer;
mod scanner;

pub use antlr::syntax_errors;
pub use parser::{SourceMap, parse_dsl, parse_dsl_all};
pub use printer::{print_dsl, print_rewrite, try_print_dsl};
pub(crate) use scanner::is_word_char;
