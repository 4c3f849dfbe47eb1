//! Token types of OpenFGA's ANTLR lexer (`OpenFGALexer.g4`), numbered as ANTLR
//! numbers them, with the display names ANTLR uses in error messages.

/// A token type; `EOF` is -1 and `EPSILON` (used only in lookahead sets) is -2.
pub(crate) type TokType = i16;

pub(crate) const EPSILON: TokType = -2;
pub(crate) const EOF: TokType = -1;
// The `tokens { ... }` block comes first.
pub(crate) const COLON: TokType = 1;
pub(crate) const COMMA: TokType = 2;
pub(crate) const LESS: TokType = 3;
pub(crate) const GREATER: TokType = 4;
pub(crate) const LBRACKET: TokType = 5;
// 6 is RBRACKET, declared but never produced (the rule is RPRACKET).
pub(crate) const LPAREN: TokType = 7;
pub(crate) const RPAREN: TokType = 8;
pub(crate) const WHITESPACE: TokType = 9;
pub(crate) const IDENTIFIER: TokType = 10;
pub(crate) const HASH: TokType = 11;
pub(crate) const AND: TokType = 12;
pub(crate) const OR: TokType = 13;
pub(crate) const BUT_NOT: TokType = 14;
pub(crate) const FROM: TokType = 15;
pub(crate) const MODULE: TokType = 16;
pub(crate) const MODEL: TokType = 17;
pub(crate) const SCHEMA: TokType = 18;
pub(crate) const SCHEMA_VERSION: TokType = 19;
pub(crate) const EXTEND: TokType = 20;
pub(crate) const TYPE: TokType = 21;
pub(crate) const CONDITION: TokType = 22;
pub(crate) const RELATIONS: TokType = 23;
pub(crate) const RELATION: TokType = 24;
pub(crate) const DEFINE: TokType = 25;
pub(crate) const KEYWORD_WITH: TokType = 26;
pub(crate) const EQUALS: TokType = 27;
pub(crate) const NOT_EQUALS: TokType = 28;
pub(crate) const IN: TokType = 29;
pub(crate) const LESS_EQUALS: TokType = 30;
pub(crate) const GREATER_EQUALS: TokType = 31;
pub(crate) const LOGICAL_AND: TokType = 32;
pub(crate) const LOGICAL_OR: TokType = 33;
pub(crate) const RPRACKET: TokType = 34;
pub(crate) const LBRACE: TokType = 35;
pub(crate) const RBRACE: TokType = 36;
pub(crate) const DOT: TokType = 37;
pub(crate) const MINUS: TokType = 38;
pub(crate) const EXCLAM: TokType = 39;
pub(crate) const QUESTIONMARK: TokType = 40;
pub(crate) const PLUS: TokType = 41;
pub(crate) const STAR: TokType = 42;
pub(crate) const SLASH: TokType = 43;
pub(crate) const PERCENT: TokType = 44;
pub(crate) const CEL_TRUE: TokType = 45;
pub(crate) const CEL_FALSE: TokType = 46;
pub(crate) const NUL: TokType = 47;
pub(crate) const CEL_COMMENT: TokType = 48;
pub(crate) const NUM_FLOAT: TokType = 49;
pub(crate) const NUM_INT: TokType = 50;
pub(crate) const NUM_UINT: TokType = 51;
pub(crate) const STRING: TokType = 52;
pub(crate) const BYTES: TokType = 53;
pub(crate) const EXTENDED_IDENTIFIER: TokType = 54;
pub(crate) const NEWLINE: TokType = 55;
// Mode CONDITION_DEF: 56 is CONDITION_DEF_END (emitted as RPAREN).
pub(crate) const CONDITION_PARAM_CONTAINER: TokType = 57;
pub(crate) const CONDITION_PARAM_TYPE: TokType = 58;
/// The highest token type (the rules that follow are all re-typed).
pub(crate) const MAX_TYPE: TokType = 64;

/// The name ANTLR prints for a token type: its literal if it has one,
/// otherwise its symbolic name.
pub(crate) fn display_name(t: TokType) -> &'static str {
    match t {
        EOF => "<EOF>",
        EPSILON => "<EPSILON>",
        COLON => "':'",
        COMMA => "','",
        LESS => "'<'",
        GREATER => "'>'",
        LBRACKET => "'['",
        6 => "RBRACKET",
        LPAREN => "'('",
        RPAREN => "')'",
        WHITESPACE => "WHITESPACE",
        IDENTIFIER => "IDENTIFIER",
        HASH => "'#'",
        AND => "'and'",
        OR => "'or'",
        BUT_NOT => "'but not'",
        FROM => "'from'",
        MODULE => "'module'",
        MODEL => "'model'",
        SCHEMA => "'schema'",
        SCHEMA_VERSION => "SCHEMA_VERSION",
        EXTEND => "'extend'",
        TYPE => "'type'",
        CONDITION => "'condition'",
        RELATIONS => "'relations'",
        RELATION => "'relation'",
        DEFINE => "'define'",
        KEYWORD_WITH => "'with'",
        EQUALS => "'=='",
        NOT_EQUALS => "'!='",
        IN => "'in'",
        LESS_EQUALS => "'<='",
        GREATER_EQUALS => "'>='",
        LOGICAL_AND => "'&&'",
        LOGICAL_OR => "'||'",
        RPRACKET => "']'",
        LBRACE => "'{'",
        RBRACE => "'}'",
        DOT => "'.'",
        MINUS => "'-'",
        EXCLAM => "'!'",
        QUESTIONMARK => "'?'",
        PLUS => "'+'",
        STAR => "'*'",
        SLASH => "'/'",
        PERCENT => "'%'",
        CEL_TRUE => "'true'",
        CEL_FALSE => "'false'",
        NUL => "'null'",
        CEL_COMMENT => "CEL_COMMENT",
        NUM_FLOAT => "NUM_FLOAT",
        NUM_INT => "NUM_INT",
        NUM_UINT => "NUM_UINT",
        STRING => "STRING",
        BYTES => "BYTES",
        EXTENDED_IDENTIFIER => "EXTENDED_IDENTIFIER",
        NEWLINE => "NEWLINE",
        56 => "CONDITION_DEF_END",
        CONDITION_PARAM_CONTAINER => "CONDITION_PARAM_CONTAINER",
        CONDITION_PARAM_TYPE => "CONDITION_PARAM_TYPE",
        59 => "CONDITION_PARAM_TYPE_LESS",
        60 => "CONDITION_PARAM_TYPE_GREATER",
        61 => "CONDITION_OPEN",
        62 => "CONDITION_COLON",
        63 => "CONDITION_COMMA",
        64 => "CONDITION_WS",
        _ => "CONDITION_NAME",
    }
}

/// A set of token types (plus `EOF` and `EPSILON`), as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct TokSet(u128);

fn bit(t: TokType) -> u128 {
    // EPSILON -> 0, EOF -> 1, type t -> t + 2 (t <= MAX_TYPE < 126).
    u32::try_from(i32::from(t) + 2)
        .ok()
        .and_then(|b| 1u128.checked_shl(b))
        .unwrap_or(0)
}

impl TokSet {
    pub(crate) const EMPTY: Self = Self(0);

    pub(crate) fn of(types: &[TokType]) -> Self {
        Self(types.iter().fold(0, |acc, t| acc | bit(*t)))
    }

    /// Every real token type except those in `types` (no `EOF`, no `EPSILON`).
    pub(crate) fn all_but(types: &[TokType]) -> Self {
        let all = (1..=MAX_TYPE).fold(0, |acc, t| acc | bit(t));
        Self(all & !Self::of(types).0)
    }

    pub(crate) fn contains(self, t: TokType) -> bool {
        self.0 & bit(t) != 0
    }

    pub(crate) fn add(&mut self, t: TokType) {
        self.0 |= bit(t);
    }

    pub(crate) fn remove(&mut self, t: TokType) {
        self.0 &= !bit(t);
    }

    pub(crate) fn union(&mut self, other: Self) {
        self.0 |= other.0;
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// ANTLR's `IntervalSet.toString(literalNames, symbolicNames)`.
    pub(crate) fn display(self) -> String {
        let names: Vec<&str> = (EOF..=MAX_TYPE)
            .filter(|t| self.contains(*t))
            .map(display_name)
            .collect();
        match names.as_slice() {
            [one] => (*one).to_owned(),
            _ => format!("{{{}}}", names.join(", ")),
        }
    }
}
