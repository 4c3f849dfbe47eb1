//! A lexer with the semantics of OpenFGA's ANTLR lexer (`OpenFGALexer.g4`):
//! longest match wins, ties go to the rule defined first, and the
//! `condition` keyword switches to the parameter-list mode until `)`.

use super::tokens::{
    AND, BUT_NOT, BYTES, CEL_COMMENT, CEL_FALSE, CEL_TRUE, COLON, COMMA, CONDITION,
    CONDITION_PARAM_CONTAINER, CONDITION_PARAM_TYPE, DEFINE, DOT, EOF, EQUALS, EXCLAM, EXTEND,
    EXTENDED_IDENTIFIER, FROM, GREATER, GREATER_EQUALS, HASH, IDENTIFIER, IN, KEYWORD_WITH, LBRACE,
    LBRACKET, LESS, LESS_EQUALS, LOGICAL_AND, LOGICAL_OR, LPAREN, MINUS, MODEL, MODULE, NEWLINE,
    NOT_EQUALS, NUL, NUM_FLOAT, NUM_INT, NUM_UINT, OR, PERCENT, PLUS, QUESTIONMARK, RBRACE,
    RELATION, RELATIONS, RPAREN, RPRACKET, SCHEMA, SCHEMA_VERSION, SLASH, STAR, STRING, TYPE,
    TokType, WHITESPACE,
};

/// One token, with its 0-based line and column (in characters).
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub ttype: TokType,
    pub text: String,
    pub line: usize,
    pub col: usize,
}

/// A character the lexer could not start any token with.
#[derive(Debug, Clone)]
pub(crate) struct LexError {
    pub text: String,
    pub line: usize,
    pub col: usize,
}

/// Literal rules of the default mode, in definition order, with where the
/// regular rules fall between them (`SCHEMA_VERSION` is defined after `schema`).
const LITERALS: &[(&str, TokType)] = &[
    ("#", HASH),
    (":", COLON),
    (",", COMMA),
    ("and", AND),
    ("or", OR),
    ("but not", BUT_NOT),
    ("from", FROM),
    ("module", MODULE),
    ("model", MODEL),
    ("schema", SCHEMA),
    // SCHEMA_VERSION comes here (rank 10).
    ("extend", EXTEND),
    ("type", TYPE),
    ("condition", CONDITION),
    ("relations", RELATIONS),
    ("relation", RELATION),
    ("define", DEFINE),
    ("with", KEYWORD_WITH),
    ("==", EQUALS),
    ("!=", NOT_EQUALS),
    ("in", IN),
    ("<", LESS),
    ("<=", LESS_EQUALS),
    (">=", GREATER_EQUALS),
    (">", GREATER),
    ("&&", LOGICAL_AND),
    ("||", LOGICAL_OR),
    ("[", LBRACKET),
    ("]", RPRACKET),
    ("{", LBRACE),
    ("}", RBRACE),
    ("(", LPAREN),
    (")", RPAREN),
    (".", DOT),
    ("-", MINUS),
    ("!", EXCLAM),
    ("?", QUESTIONMARK),
    ("+", PLUS),
    ("*", STAR),
    ("/", SLASH),
    ("%", PERCENT),
    ("true", CEL_TRUE),
    ("false", CEL_FALSE),
    ("null", NUL),
];

/// Rank of `SCHEMA_VERSION` among the default-mode rules.
const SCHEMA_VERSION_RANK: usize = 10;

const PARAM_TYPES: &[&str] = &[
    "bool",
    "string",
    "int",
    "uint",
    "double",
    "duration",
    "timestamp",
    "ipaddress",
];

struct Cursor<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Cursor<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(self.pos + i).copied()
    }

    fn starts_with(&self, lit: &str) -> bool {
        lit.chars().enumerate().all(|(i, c)| self.at(i) == Some(c))
    }

    /// Length of the run of chars from offset `from` satisfying `f`.
    fn run(&self, from: usize, f: impl Fn(char) -> bool) -> usize {
        let mut n = 0;
        while self.at(from + n).is_some_and(&f) {
            n += 1;
        }
        n
    }
}

fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_ws(c: char) -> bool {
    matches!(c, '\t' | ' ' | '\u{c}')
}

fn exponent(c: &Cursor<'_>, at: usize) -> usize {
    if !matches!(c.at(at), Some('e' | 'E')) {
        return 0;
    }
    let sign = usize::from(matches!(c.at(at + 1), Some('+' | '-')));
    let digits = c.run(at + 1 + sign, is_digit);
    if digits == 0 { 0 } else { 1 + sign + digits }
}

fn schema_version(c: &Cursor<'_>) -> usize {
    let a = c.run(0, is_digit);
    if a == 0 || c.at(a) != Some('.') {
        return 0;
    }
    let b = c.run(a + 1, is_digit);
    if b == 0 { 0 } else { a + 1 + b }
}

fn num_float(c: &Cursor<'_>) -> usize {
    let a = c.run(0, is_digit);
    let mut best = 0;
    if a > 0 {
        let with_frac = schema_version(c);
        if with_frac > 0 {
            best = with_frac + exponent(c, with_frac);
        }
        let e = exponent(c, a);
        if e > 0 {
            best = best.max(a + e);
        }
    } else if c.at(0) == Some('.') {
        let b = c.run(1, is_digit);
        if b > 0 {
            best = 1 + b + exponent(c, 1 + b);
        }
    }
    best
}

fn hex_run(c: &Cursor<'_>) -> usize {
    if c.starts_with("0x") {
        let h = c.run(2, |ch| ch.is_ascii_hexdigit());
        if h > 0 {
            return 2 + h;
        }
    }
    0
}

fn num_int(c: &Cursor<'_>) -> usize {
    c.run(0, is_digit).max(hex_run(c))
}

fn num_uint(c: &Cursor<'_>) -> usize {
    let u = |n: usize| {
        if n > 0 && matches!(c.at(n), Some('u' | 'U')) {
            n + 1
        } else {
            0
        }
    };
    u(c.run(0, is_digit)).max(u(hex_run(c)))
}

/// Length of a valid escape sequence at offset `at` (which holds `\`), or 0.
fn escape(c: &Cursor<'_>, at: usize) -> usize {
    let hex = |from: usize, n: usize| {
        (0..n).all(|i| c.at(from + i).is_some_and(|h| h.is_ascii_hexdigit()))
    };
    match c.at(at + 1) {
        Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '"' | '\'' | '\\' | '?' | '`') => 2,
        Some('x' | 'X') if hex(at + 2, 2) => 4,
        Some('u') if hex(at + 2, 4) => 6,
        Some('U') if hex(at + 2, 8) => 10,
        Some('0'..='3')
            if matches!(c.at(at + 2), Some('0'..='7'))
                && matches!(c.at(at + 3), Some('0'..='7')) =>
        {
            4
        }
        _ => 0,
    }
}

/// A quoted string starting at `at` with quote `q`: single-line with escapes.
fn quoted(c: &Cursor<'_>, at: usize, q: char, raw: bool) -> usize {
    if c.at(at) != Some(q) {
        return 0;
    }
    let mut i = at + 1;
    loop {
        match c.at(i) {
            None | Some('\n' | '\r') => return 0,
            Some(ch) if ch == q => return i + 1 - at,
            Some('\\') if !raw => {
                let e = escape(c, i);
                if e == 0 {
                    return 0;
                }
                i += e;
            }
            Some(_) => i += 1,
        }
    }
}

/// A triple-quoted string starting at `at`: the shortest match.
fn triple(c: &Cursor<'_>, at: usize, q: char, raw: bool) -> usize {
    let delim: String = std::iter::repeat_n(q, 3).collect();
    let starts = |i: usize| {
        delim
            .chars()
            .enumerate()
            .all(|(k, d)| c.at(i + k) == Some(d))
    };
    if !starts(at) {
        return 0;
    }
    let mut i = at + 3;
    loop {
        if starts(i) {
            return i + 3 - at;
        }
        match c.at(i) {
            None => return 0,
            Some('\\') if !raw => {
                let e = escape(c, i);
                if e == 0 {
                    return 0;
                }
                i += e;
            }
            Some(_) => i += 1,
        }
    }
}

fn string_at(c: &Cursor<'_>, at: usize) -> usize {
    let raw = usize::from(matches!(c.at(at), Some('r' | 'R')));
    let start = at + raw;
    let is_raw = raw == 1;
    let best = ['"', '\'']
        .iter()
        .map(|q| quoted(c, start, *q, is_raw).max(triple(c, start, *q, is_raw)))
        .max()
        .unwrap_or(0);
    if best == 0 { 0 } else { raw + best }
}

fn bytes(c: &Cursor<'_>) -> usize {
    if matches!(c.at(0), Some('b' | 'B')) {
        let s = string_at(c, 1);
        if s > 0 {
            return 1 + s;
        }
    }
    0
}

fn identifier(c: &Cursor<'_>) -> usize {
    match c.at(0) {
        Some(ch) if is_letter(ch) || ch == '_' => {
            1 + c.run(1, |ch| {
                is_letter(ch) || is_digit(ch) || ch == '_' || ch == '-'
            })
        }
        _ => 0,
    }
}

fn extended_identifier(c: &Cursor<'_>) -> usize {
    if !c.at(0).is_some_and(|ch| is_letter(ch) || ch == '_') {
        return 0;
    }
    let word = |ch: char| is_letter(ch) || is_digit(ch) || ch == '_';
    let mut n = 1;
    loop {
        let sep = usize::from(matches!(c.at(n), Some('/' | '.' | '-')));
        let w = c.run(n + sep, word);
        if w == 0 {
            return n;
        }
        n += sep + w;
    }
}

fn newline(c: &Cursor<'_>) -> usize {
    let run = c.run(0, |ch| is_ws(ch) || matches!(ch, '\r' | '\n'));
    let has_break = (0..run).any(|i| matches!(c.at(i), Some('\r' | '\n' | '\u{c}')));
    if has_break { run } else { 0 }
}

fn cel_comment(c: &Cursor<'_>) -> usize {
    if c.starts_with("//") {
        2 + c.run(2, |ch| ch != '\n')
    } else {
        0
    }
}

/// The longest match in the default mode: (length, type), ties to the earlier rule.
fn default_mode(c: &Cursor<'_>) -> Option<(usize, TokType)> {
    let mut best: Option<(usize, usize, TokType)> = None;
    let mut offer = |len: usize, rank: usize, t: TokType| {
        if len > 0 && best.is_none_or(|(l, r, _)| len > l || (len == l && rank < r)) {
            best = Some((len, rank, t));
        }
    };
    for (i, (lit, t)) in LITERALS.iter().enumerate() {
        if c.starts_with(lit) {
            let rank = if i < SCHEMA_VERSION_RANK { i } else { i + 1 };
            offer(lit.chars().count(), rank, *t);
        }
    }
    offer(schema_version(c), SCHEMA_VERSION_RANK, SCHEMA_VERSION);
    let base = LITERALS.len() + 1;
    offer(c.run(0, is_ws), base, WHITESPACE);
    offer(cel_comment(c), base + 1, CEL_COMMENT);
    offer(num_float(c), base + 2, NUM_FLOAT);
    offer(num_int(c), base + 3, NUM_INT);
    offer(num_uint(c), base + 4, NUM_UINT);
    offer(string_at(c, 0), base + 5, STRING);
    offer(bytes(c), base + 6, BYTES);
    offer(identifier(c), base + 7, IDENTIFIER);
    offer(extended_identifier(c), base + 8, EXTENDED_IDENTIFIER);
    offer(newline(c), base + 9, NEWLINE);
    best.map(|(l, _, t)| (l, t))
}

/// The longest match in the `CONDITION_DEF` mode.
fn condition_mode(c: &Cursor<'_>) -> Option<(usize, TokType)> {
    let mut best: Option<(usize, usize, TokType)> = None;
    let mut offer = |len: usize, rank: usize, t: TokType| {
        if len > 0 && best.is_none_or(|(l, r, _)| len > l || (len == l && rank < r)) {
            best = Some((len, rank, t));
        }
    };
    let lit = |s: &str| if c.starts_with(s) { s.len() } else { 0 };
    offer(lit(")"), 0, RPAREN);
    offer(lit("map").max(lit("list")), 1, CONDITION_PARAM_CONTAINER);
    let ty = PARAM_TYPES.iter().map(|s| lit(s)).max().unwrap_or(0);
    offer(ty, 2, CONDITION_PARAM_TYPE);
    offer(lit("<"), 3, LESS);
    offer(lit(">"), 4, GREATER);
    offer(lit("("), 5, LPAREN);
    offer(lit(":"), 6, COLON);
    offer(lit(","), 7, COMMA);
    offer(c.run(0, is_ws), 8, WHITESPACE);
    offer(identifier(c), 9, IDENTIFIER);
    best.map(|(l, _, t)| (l, t))
}

/// Tokens on the default channel (ending with `EOF`), and lexer errors.
pub(crate) fn tokenize(src: &str) -> (Vec<Token>, Vec<LexError>) {
    let chars: Vec<char> = src.chars().collect();
    let mut c = Cursor {
        chars: &chars,
        pos: 0,
    };
    let (mut line, mut col) = (0usize, 0usize);
    let mut in_condition = false;
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    while c.pos < chars.len() {
        let found = if in_condition {
            condition_mode(&c)
        } else {
            default_mode(&c)
        };
        let (len, ttype) = found.unwrap_or((1, 0));
        let text: String = chars.iter().skip(c.pos).take(len).collect();
        if ttype == 0 {
            errors.push(LexError {
                text: text.clone(),
                line,
                col,
            });
        } else if ttype != CEL_COMMENT {
            tokens.push(Token {
                ttype,
                text: text.clone(),
                line,
                col,
            });
        }
        if ttype == CONDITION && !in_condition {
            in_condition = true;
        } else if ttype == RPAREN && in_condition {
            in_condition = false;
        }
        for ch in text.chars() {
            if ch == '\n' {
                line += 1;
                col = 0;
            } else {
                col += 1;
            }
        }
        c.pos += len;
    }
    tokens.push(Token {
        ttype: EOF,
        text: "<EOF>".to_owned(),
        line,
        col,
    });
    (tokens, errors)
}
