//! The OpenFGA parser as ANTLR generates it, run over the grammar's ATN,
//! with ANTLR's `DefaultErrorStrategy`: `sync` before each decision,
//! single-token deletion and insertion, and resynchronisation on the follow
//! sets of the rule invocation stack. It only recognises; it reports the
//! same syntax errors, in the same words and places, as OpenFGA's tools.

use super::atn::{Atn, Kind, LookCtx, Node};
use super::grammar::MAIN;
use super::lexer::Token;
use super::predict::{PredictError, Predictor};
use super::tokens::{EOF, EPSILON, TokSet, TokType};

/// Deepest rule nesting the recogniser follows (nested parentheses).
const MAX_DEPTH: usize = 200;

/// A syntax error: message and the token it points at.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub token: usize,
}

/// ANTLR's recognition exceptions.
enum Recog {
    NoViableAlt { start: usize, offending: usize },
    InputMismatch { offending: usize, expected: TokSet },
}

enum Fail {
    Recog(Recog),
    /// Stop recognising (too deep, or out of budget).
    Abort(String),
}

impl From<Recog> for Fail {
    fn from(r: Recog) -> Self {
        Self::Recog(r)
    }
}

struct Frame {
    invoking: Option<usize>,
}

pub(crate) struct Recognizer<'a> {
    atn: &'a Atn,
    tokens: &'a [Token],
    types: Vec<TokType>,
    pos: usize,
    state: usize,
    frames: Vec<Frame>,
    error_mode: bool,
    last_error_index: Option<usize>,
    last_error_states: Vec<usize>,
    budget: u64,
    pub errors: Vec<SyntaxError>,
}

impl<'a> Recognizer<'a> {
    pub(crate) fn new(atn: &'a Atn, tokens: &'a [Token]) -> Self {
        let types = tokens.iter().map(|t| t.ttype).collect();
        // Nesting is capped at 64 levels, where prediction needs about 600k steps.
        let budget = 1_000_000u64.saturating_add(2_000u64.saturating_mul(tokens.len() as u64));
        Self {
            atn,
            tokens,
            types,
            pos: 0,
            state: 0,
            frames: Vec::new(),
            error_mode: false,
            last_error_index: None,
            last_error_states: Vec::new(),
            budget,
            errors: Vec::new(),
        }
    }

    /// Recognise the whole input from `main`.
    pub(crate) fn run(&mut self) -> Result<(), String> {
        match self.invoke(MAIN, None) {
            Ok(()) => Ok(()),
            Err(Fail::Abort(msg)) => Err(msg),
            Err(Fail::Recog(_)) => Ok(()),
        }
    }

    fn la(&self, k: usize) -> TokType {
        self.types
            .get(self.pos + k - 1)
            .or(self.types.last())
            .copied()
            .unwrap_or(EOF)
    }

    fn consume(&mut self) {
        if self.la(1) != EOF {
            self.pos += 1;
        }
    }

    fn invoke(&mut self, rule: usize, invoking: Option<usize>) -> Result<(), Fail> {
        if self.frames.len() >= MAX_DEPTH {
            return Err(Fail::Abort("relation definition nested too deeply".into()));
        }
        self.frames.push(Frame { invoking });
        self.state = self.atn.rule_start.get(rule).copied().unwrap_or(0);
        let atn = self.atn;
        let result = match atn.bodies.get(rule) {
            Some(body) => self.walk(body),
            None => Ok(()),
        };
        let out = match result {
            Ok(()) => Ok(()),
            Err(Fail::Recog(e)) => {
                self.report_error(&e);
                self.recover();
                Ok(())
            }
            Err(abort) => Err(abort),
        };
        self.frames.pop();
        if let Some(s) = invoking {
            self.state = s;
        }
        out
    }

    fn walk(&mut self, node: &Node) -> Result<(), Fail> {
        match node {
            Node::Match { state, set } => {
                self.state = *state;
                if set.contains(self.la(1)) {
                    self.report_match();
                    self.consume();
                    Ok(())
                } else {
                    self.recover_inline()
                }
            }
            Node::Call { state, rule } => {
                self.state = *state;
                self.invoke(*rule, Some(*state))
            }
            Node::Seq(nodes) => nodes.iter().try_for_each(|n| self.walk(n)),
            Node::Choice {
                state,
                alts,
                optional,
                ll1,
            } => self.choice(*state, alts, *optional, ll1.as_deref()),
            Node::Star {
                entry,
                loopback,
                body,
                ll1,
            } => self.star(*entry, *loopback, body, *ll1),
            Node::Plus {
                start,
                loopback,
                body,
                ll1,
            } => self.plus(*start, *loopback, body, *ll1),
        }
    }

    /// An alternative block or an optional block (`LL1AltBlock`, `AltBlock`,
    /// `LL1OptionalBlock`, `OptionalBlock` in ANTLR's templates).
    fn choice(
        &mut self,
        state: usize,
        alts: &[Node],
        optional: bool,
        ll1: Option<&[TokSet]>,
    ) -> Result<(), Fail> {
        self.state = state;
        self.sync()?;
        let la = self.la(1);
        let chosen = match ll1 {
            Some(looks) => match looks.iter().position(|l| l.contains(la)) {
                Some(i) => Some(i),
                None if optional => None,
                None => {
                    let here = self.pos;
                    return Err(Recog::NoViableAlt {
                        start: here,
                        offending: here,
                    }
                    .into());
                }
            },
            None => self.predict(state)?.checked_sub(1),
        };
        match chosen.and_then(|i| alts.get(i)) {
            Some(alt) => self.walk(alt),
            None => Ok(()),
        }
    }

    /// `( ... )*`: `sync` at the entry, then at the loop-back after each pass.
    fn star(
        &mut self,
        entry: usize,
        loopback: usize,
        body: &Node,
        ll1: Option<TokSet>,
    ) -> Result<(), Fail> {
        self.state = entry;
        self.sync()?;
        loop {
            let enter = match ll1 {
                Some(look) => look.contains(self.la(1)),
                None => self.predict(entry)? == 1,
            };
            if !enter {
                return Ok(());
            }
            self.walk(body)?;
            self.state = loopback;
            self.sync()?;
        }
    }

    /// `( ... )+`: one pass, then `sync` and a decision at the loop-back.
    fn plus(
        &mut self,
        start: usize,
        loopback: usize,
        body: &Node,
        ll1: Option<TokSet>,
    ) -> Result<(), Fail> {
        self.state = start;
        self.sync()?;
        loop {
            self.walk(body)?;
            self.state = loopback;
            self.sync()?;
            let again = match ll1 {
                Some(look) => look.contains(self.la(1)),
                None => self.predict(loopback)? == 1,
            };
            if !again {
                return Ok(());
            }
        }
    }

    /// The call stack as follow states, innermost last.
    fn outer_stack(&self) -> Vec<usize> {
        self.frames
            .iter()
            .filter_map(|f| f.invoking.and_then(|s| self.atn.follow_of(s)))
            .collect()
    }

    fn predict(&mut self, decision: usize) -> Result<usize, Fail> {
        let outer = self.outer_stack();
        let mut p = Predictor {
            atn: self.atn,
            input: &self.types,
            budget: &mut self.budget,
        };
        match p.predict(decision, self.pos, &outer) {
            Ok(alt) => Ok(alt),
            Err(PredictError::NoViableAlt { start, offending }) => {
                Err(Recog::NoViableAlt { start, offending }.into())
            }
            Err(PredictError::Budget) => Err(Fail::Abort("model too complex to parse".into())),
        }
    }

    /// ANTLR's `getExpectedTokens`: what may follow the current state,
    /// looking into the callers while the current rule can end.
    fn expected(&self) -> TokSet {
        let mut following = self.atn.next_tokens(self.state);
        if !following.contains(EPSILON) {
            return following;
        }
        let mut expected = following;
        expected.remove(EPSILON);
        for frame in self.frames.iter().rev() {
            if !following.contains(EPSILON) {
                break;
            }
            let Some(follow) = frame.invoking.and_then(|s| self.atn.follow_of(s)) else {
                break;
            };
            following = self.atn.next_tokens(follow);
            expected.union(following);
            expected.remove(EPSILON);
        }
        if following.contains(EPSILON) {
            expected.add(EOF);
        }
        expected
    }

    /// ANTLR's `getErrorRecoverySet`.
    fn recovery_set(&self) -> TokSet {
        let mut set = TokSet::EMPTY;
        for frame in self.frames.iter().rev() {
            if let Some(follow) = frame.invoking.and_then(|s| self.atn.follow_of(s)) {
                set.union(self.atn.next_tokens(follow));
            }
        }
        set.remove(EPSILON);
        set
    }

    fn consume_until(&mut self, set: TokSet) {
        while self.la(1) != EOF && !set.contains(self.la(1)) {
            self.consume();
        }
    }

    fn sync(&mut self) -> Result<(), Fail> {
        if self.error_mode {
            return Ok(());
        }
        let la = self.la(1);
        let next = self.atn.next_tokens(self.state);
        if next.contains(la) || next.contains(EPSILON) {
            return Ok(());
        }
        match self.atn.state(self.state).map(|s| s.kind) {
            Some(
                Kind::BlockStart
                | Kind::StarBlockStart
                | Kind::PlusBlockStart
                | Kind::StarLoopEntry,
            ) => {
                if self.single_token_deletion() {
                    return Ok(());
                }
                Err(Recog::InputMismatch {
                    offending: self.pos,
                    expected: self.expected(),
                }
                .into())
            }
            Some(Kind::PlusLoopBack | Kind::StarLoopBack) => {
                self.report_unwanted();
                let mut set = self.expected();
                set.union(self.recovery_set());
                self.consume_until(set);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn recover_inline(&mut self) -> Result<(), Fail> {
        if self.single_token_deletion() {
            self.consume();
            return Ok(());
        }
        if self.single_token_insertion() {
            return Ok(());
        }
        Err(Recog::InputMismatch {
            offending: self.pos,
            expected: self.expected(),
        }
        .into())
    }

    fn single_token_deletion(&mut self) -> bool {
        if !self.expected().contains(self.la(2)) {
            return false;
        }
        self.report_unwanted();
        self.consume();
        self.report_match();
        true
    }

    fn single_token_insertion(&mut self) -> bool {
        let Some(next) = self
            .atn
            .state(self.state)
            .and_then(|s| s.edges.first())
            .map(|e| e.target())
        else {
            return false;
        };
        let ctx = LookCtx {
            null_base: false,
            stack: self.outer_stack(),
        };
        if !self.atn.look(next, ctx, true).contains(self.la(1)) {
            return false;
        }
        if !self.error_mode {
            self.error_mode = true;
            let msg = format!(
                "missing {} at {}",
                self.expected().display(),
                self.display(self.pos)
            );
            self.push(msg, self.pos);
        }
        true
    }

    fn report_match(&mut self) {
        self.error_mode = false;
        self.last_error_index = None;
        self.last_error_states.clear();
    }

    fn report_unwanted(&mut self) {
        if self.error_mode {
            return;
        }
        self.error_mode = true;
        let msg = format!(
            "extraneous input {} expecting {}",
            self.display(self.pos),
            self.expected().display()
        );
        self.push(msg, self.pos);
    }

    fn report_error(&mut self, e: &Recog) {
        if self.error_mode {
            return;
        }
        self.error_mode = true;
        match e {
            Recog::NoViableAlt { start, offending } => {
                let text = if self.types.get(*start) == Some(&EOF) {
                    "<EOF>".to_owned()
                } else {
                    self.tokens
                        .iter()
                        .take(offending + 1)
                        .skip(*start)
                        .map(|t| t.text.as_str())
                        .collect()
                };
                let msg = format!("no viable alternative at input {}", quote(&text));
                self.push(msg, *offending);
            }
            Recog::InputMismatch {
                offending,
                expected,
            } => {
                let msg = format!(
                    "mismatched input {} expecting {}",
                    self.display(*offending),
                    expected.display()
                );
                self.push(msg, *offending);
            }
        }
    }

    fn recover(&mut self) {
        if self.last_error_index == Some(self.pos) && self.last_error_states.contains(&self.state) {
            self.consume();
        }
        self.last_error_index = Some(self.pos);
        self.last_error_states.push(self.state);
        let set = self.recovery_set();
        self.consume_until(set);
    }

    fn display(&self, token: usize) -> String {
        self.tokens
            .get(token)
            .map_or_else(|| "<no token>".to_owned(), |t| quote(&t.text))
    }

    fn push(&mut self, message: String, token: usize) {
        self.errors.push(SyntaxError { message, token });
    }
}

/// ANTLR's `escapeWSAndQuote`.
fn quote(s: &str) -> String {
    let escaped = s
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t");
    format!("'{escaped}'")
}
