//! OpenFGA's parser grammar (`OpenFGAParser.g4`) as data: one element tree
//! per rule, in the grammar's order.

use super::tokens::{
    AND, BUT_NOT, BYTES, CEL_COMMENT, CEL_FALSE, CEL_TRUE, COLON, COMMA, CONDITION,
    CONDITION_PARAM_CONTAINER, CONDITION_PARAM_TYPE, DEFINE, DOT, EOF, EQUALS, EXCLAM, EXTEND,
    EXTENDED_IDENTIFIER, FROM, GREATER, GREATER_EQUALS, HASH, IDENTIFIER, IN, KEYWORD_WITH, LBRACE,
    LBRACKET, LESS, LESS_EQUALS, LOGICAL_AND, LOGICAL_OR, LPAREN, MINUS, MODEL, MODULE, NEWLINE,
    NOT_EQUALS, NUL, NUM_FLOAT, NUM_INT, NUM_UINT, OR, PERCENT, PLUS, QUESTIONMARK, RBRACE,
    RELATION, RELATIONS, RPAREN, RPRACKET, SCHEMA, SCHEMA_VERSION, SLASH, STAR, STRING, TYPE,
    TokSet, TokType, WHITESPACE,
};

// Rule indices, in grammar order.
pub(crate) const MAIN: usize = 0;
const MODEL_HEADER: usize = 1;
const MODULE_HEADER: usize = 2;
const TYPE_DEFS: usize = 3;
const TYPE_DEF: usize = 4;
const RELATION_DECLARATION: usize = 5;
const RELATION_NAME: usize = 6;
const RELATION_DEF: usize = 7;
const RELATION_DEF_NO_DIRECT: usize = 8;
const RELATION_DEF_PARTIALS: usize = 9;
const RELATION_DEF_GROUPING: usize = 10;
const RELATION_RECURSE: usize = 11;
const RELATION_RECURSE_NO_DIRECT: usize = 12;
const RELATION_DEF_DIRECT_ASSIGNMENT: usize = 13;
const RELATION_DEF_REWRITE: usize = 14;
const RELATION_DEF_TYPE_RESTRICTION: usize = 15;
const RELATION_DEF_TYPE_RESTRICTION_BASE: usize = 16;
const CONDITIONS: usize = 17;
const CONDITION_RULE: usize = 18;
const CONDITION_NAME: usize = 19;
const CONDITION_PARAMETER: usize = 20;
const PARAMETER_NAME: usize = 21;
const PARAMETER_TYPE: usize = 22;
const MULTI_LINE_COMMENT: usize = 23;
const IDENTIFIER_RULE: usize = 24;
const CONDITION_EXPRESSION: usize = 25;
pub(crate) const RULE_COUNT: usize = 26;

/// A grammar element.
pub(crate) enum G {
    T(TokType),
    Set(TokSet),
    R(usize),
    Seq(Vec<G>),
    Alt(Vec<G>),
    Opt(Box<G>),
    Star(Box<G>),
    Plus(Box<G>),
}

fn seq(v: Vec<G>) -> G {
    G::Seq(v)
}
fn alt(v: Vec<G>) -> G {
    G::Alt(v)
}
fn opt(g: G) -> G {
    G::Opt(Box::new(g))
}
fn star(g: G) -> G {
    G::Star(Box::new(g))
}
fn plus(g: G) -> G {
    G::Plus(Box::new(g))
}
use G::{R, T};

/// The rules of `OpenFGAParser.g4`.
pub(crate) fn rules() -> Vec<G> {
    let ws = || T(WHITESPACE);
    let nl = || T(NEWLINE);
    let comment_line = || opt(seq(vec![nl(), R(MULTI_LINE_COMMENT)]));
    let grouping_or_recurse = || {
        alt(vec![
            R(RELATION_DEF_GROUPING),
            R(RELATION_RECURSE_NO_DIRECT),
        ])
    };
    let cel_tokens = TokSet::of(&[
        IDENTIFIER,
        EQUALS,
        NOT_EQUALS,
        IN,
        LESS,
        LESS_EQUALS,
        GREATER_EQUALS,
        GREATER,
        LOGICAL_AND,
        LOGICAL_OR,
        LBRACKET,
        RPRACKET,
        LBRACE,
        LPAREN,
        RPAREN,
        DOT,
        MINUS,
        EXCLAM,
        QUESTIONMARK,
        PLUS,
        STAR,
        SLASH,
        PERCENT,
        CEL_TRUE,
        CEL_FALSE,
        NUL,
        WHITESPACE,
        CEL_COMMENT,
        NUM_FLOAT,
        NUM_INT,
        NUM_UINT,
        STRING,
        BYTES,
        NEWLINE,
    ]);
    vec![
        // main
        seq(vec![
            opt(ws()),
            opt(nl()),
            alt(vec![R(MODEL_HEADER), R(MODULE_HEADER)]),
            opt(nl()),
            R(TYPE_DEFS),
            opt(nl()),
            R(CONDITIONS),
            opt(nl()),
            T(EOF),
        ]),
        // modelHeader
        seq(vec![
            opt(seq(vec![R(MULTI_LINE_COMMENT), nl()])),
            T(MODEL),
            nl(),
            T(SCHEMA),
            ws(),
            T(SCHEMA_VERSION),
            opt(ws()),
        ]),
        // moduleHeader
        seq(vec![
            opt(seq(vec![R(MULTI_LINE_COMMENT), nl()])),
            T(MODULE),
            ws(),
            R(IDENTIFIER_RULE),
            opt(ws()),
        ]),
        // typeDefs
        star(R(TYPE_DEF)),
        // typeDef
        seq(vec![
            comment_line(),
            nl(),
            opt(seq(vec![T(EXTEND), ws()])),
            T(TYPE),
            ws(),
            R(IDENTIFIER_RULE),
            opt(seq(vec![nl(), T(RELATIONS), plus(R(RELATION_DECLARATION))])),
        ]),
        // relationDeclaration
        seq(vec![
            comment_line(),
            nl(),
            T(DEFINE),
            ws(),
            R(RELATION_NAME),
            opt(ws()),
            T(COLON),
            opt(ws()),
            R(RELATION_DEF),
        ]),
        // relationName
        R(IDENTIFIER_RULE),
        // relationDef
        seq(vec![
            alt(vec![
                R(RELATION_DEF_DIRECT_ASSIGNMENT),
                R(RELATION_DEF_GROUPING),
                R(RELATION_RECURSE),
            ]),
            opt(R(RELATION_DEF_PARTIALS)),
        ]),
        // relationDefNoDirect
        seq(vec![
            alt(vec![
                R(RELATION_DEF_GROUPING),
                R(RELATION_RECURSE_NO_DIRECT),
            ]),
            opt(R(RELATION_DEF_PARTIALS)),
        ]),
        // relationDefPartials
        alt(vec![
            plus(seq(vec![ws(), T(OR), ws(), grouping_or_recurse()])),
            plus(seq(vec![ws(), T(AND), ws(), grouping_or_recurse()])),
            seq(vec![ws(), T(BUT_NOT), ws(), grouping_or_recurse()]),
        ]),
        // relationDefGrouping
        R(RELATION_DEF_REWRITE),
        // relationRecurse
        seq(vec![
            T(LPAREN),
            star(ws()),
            alt(vec![R(RELATION_DEF), R(RELATION_RECURSE_NO_DIRECT)]),
            star(ws()),
            T(RPAREN),
        ]),
        // relationRecurseNoDirect
        seq(vec![
            T(LPAREN),
            star(ws()),
            alt(vec![
                R(RELATION_DEF_NO_DIRECT),
                R(RELATION_RECURSE_NO_DIRECT),
            ]),
            star(ws()),
            T(RPAREN),
        ]),
        // relationDefDirectAssignment
        seq(vec![
            T(LBRACKET),
            opt(ws()),
            R(RELATION_DEF_TYPE_RESTRICTION),
            opt(ws()),
            star(seq(vec![
                T(COMMA),
                opt(ws()),
                R(RELATION_DEF_TYPE_RESTRICTION),
                opt(ws()),
            ])),
            T(RPRACKET),
        ]),
        // relationDefRewrite
        seq(vec![
            R(IDENTIFIER_RULE),
            opt(seq(vec![ws(), T(FROM), ws(), R(IDENTIFIER_RULE)])),
        ]),
        // relationDefTypeRestriction
        seq(vec![
            opt(nl()),
            alt(vec![
                R(RELATION_DEF_TYPE_RESTRICTION_BASE),
                seq(vec![
                    R(RELATION_DEF_TYPE_RESTRICTION_BASE),
                    ws(),
                    T(KEYWORD_WITH),
                    ws(),
                    R(CONDITION_NAME),
                ]),
            ]),
            opt(nl()),
        ]),
        // relationDefTypeRestrictionBase
        seq(vec![
            R(IDENTIFIER_RULE),
            opt(alt(vec![
                seq(vec![T(COLON), T(STAR)]),
                seq(vec![T(HASH), R(IDENTIFIER_RULE)]),
            ])),
        ]),
        // conditions
        star(R(CONDITION_RULE)),
        // condition
        seq(vec![
            comment_line(),
            nl(),
            T(CONDITION),
            ws(),
            R(CONDITION_NAME),
            opt(ws()),
            T(LPAREN),
            opt(ws()),
            R(CONDITION_PARAMETER),
            opt(ws()),
            star(seq(vec![
                T(COMMA),
                opt(ws()),
                R(CONDITION_PARAMETER),
                opt(ws()),
            ])),
            opt(nl()),
            T(RPAREN),
            opt(ws()),
            T(LBRACE),
            opt(nl()),
            opt(ws()),
            R(CONDITION_EXPRESSION),
            opt(nl()),
            T(RBRACE),
        ]),
        // conditionName
        T(IDENTIFIER),
        // conditionParameter
        seq(vec![
            opt(nl()),
            R(PARAMETER_NAME),
            opt(ws()),
            T(COLON),
            opt(ws()),
            R(PARAMETER_TYPE),
        ]),
        // parameterName
        T(IDENTIFIER),
        // parameterType
        alt(vec![
            T(CONDITION_PARAM_TYPE),
            seq(vec![
                T(CONDITION_PARAM_CONTAINER),
                T(LESS),
                T(CONDITION_PARAM_TYPE),
                T(GREATER),
            ]),
        ]),
        // multiLineComment
        seq(vec![
            T(HASH),
            star(G::Set(TokSet::all_but(&[NEWLINE]))),
            opt(seq(vec![nl(), R(MULTI_LINE_COMMENT)])),
        ]),
        // identifier (a token set)
        G::Set(TokSet::of(&[
            MODEL,
            SCHEMA,
            EXTEND,
            TYPE,
            RELATION,
            IDENTIFIER,
            MODULE,
            EXTENDED_IDENTIFIER,
        ])),
        // conditionExpression
        star(alt(vec![
            G::Set(cel_tokens),
            G::Set(TokSet::all_but(&[RBRACE])),
        ])),
    ]
}
