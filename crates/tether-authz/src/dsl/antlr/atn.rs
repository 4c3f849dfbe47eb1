//! OpenFGA's parser grammar compiled into an ATN the way the ANTLR tool
//! builds one, plus the lookahead-set analysis
//! (`LL1Analyzer`) that ANTLR's runtime and code generator use.

use std::collections::HashSet;

use super::grammar::{G, MAIN, RULE_COUNT, rules};
use super::tokens::{EOF, EPSILON, TokSet};

/// ATN state kinds that matter to error recovery (ANTLR's `ATNState` types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Basic,
    RuleStart,
    RuleStop,
    BlockStart,
    BlockEnd,
    PlusBlockStart,
    PlusLoopBack,
    StarBlockStart,
    StarLoopEntry,
    StarLoopBack,
    LoopEnd,
}

/// A transition.
#[derive(Debug, Clone)]
pub(crate) enum Edge {
    Eps(usize),
    /// Atom, set or not-set transition (a not-set is stored complemented).
    Tok(usize, TokSet),
    Rule {
        start: usize,
        follow: usize,
    },
}

impl Edge {
    pub(crate) fn target(&self) -> usize {
        match self {
            Self::Eps(t) | Self::Tok(t, _) => *t,
            Self::Rule { start, .. } => *start,
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub kind: Kind,
    pub rule: usize,
    pub edges: Vec<Edge>,
}

impl State {
    /// ANTLR's `onlyHasEpsilonTransitions` (false for a state with no transitions).
    pub(crate) fn only_epsilon(&self) -> bool {
        !self.edges.is_empty() && self.edges.iter().all(|e| !matches!(e, Edge::Tok(..)))
    }
}

/// What the generated parser code does at each point of a rule.
#[derive(Debug)]
pub(crate) enum Node {
    /// Match a token (or a token set) at `state`.
    Match {
        state: usize,
        set: TokSet,
    },
    /// Invoke `rule` from `state`.
    Call {
        state: usize,
        rule: usize,
    },
    Seq(Vec<Node>),
    /// A block with a decision at `state`; `optional` adds an exit alternative.
    /// `ll1` holds each alternative's lookahead when the decision is LL(1).
    Choice {
        state: usize,
        alts: Vec<Node>,
        optional: bool,
        ll1: Option<Vec<TokSet>>,
    },
    /// `( body )*`: decision at `entry`, `sync` at `loopback` after each pass.
    Star {
        entry: usize,
        loopback: usize,
        body: Box<Node>,
        ll1: Option<TokSet>,
    },
    /// `( body )+`: decision at `loopback`.
    Plus {
        start: usize,
        loopback: usize,
        body: Box<Node>,
        ll1: Option<TokSet>,
    },
}

#[derive(Debug)]
pub(crate) struct Atn {
    pub states: Vec<State>,
    pub rule_start: Vec<usize>,
    pub rule_stop: Vec<usize>,
    pub bodies: Vec<Node>,
}

/// A lookahead context: return states (innermost last) over a base that is
/// either "no context" (`null`: the rule end adds `EPSILON`) or the empty
/// context of the outermost rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LookCtx {
    pub null_base: bool,
    pub stack: Vec<usize>,
}

struct Builder {
    states: Vec<State>,
}

impl Builder {
    fn new_state(&mut self, kind: Kind, rule: usize) -> usize {
        self.states.push(State {
            kind,
            rule,
            edges: Vec::new(),
        });
        self.states.len() - 1
    }

    fn edge(&mut self, from: usize, e: Edge) {
        if let Some(s) = self.states.get_mut(from) {
            s.edges.push(e);
        }
    }

    fn eps(&mut self, from: usize, to: usize) {
        self.edge(from, Edge::Eps(to));
    }

    /// Build the alternatives of a block hanging between `start` and `end`.
    fn block(
        &mut self,
        alts: &[G],
        rule: usize,
        start: usize,
        end: usize,
        rs: &[usize],
    ) -> Vec<Node> {
        alts.iter()
            .map(|a| {
                let (l, r, n) = self.build(a, rule, rs);
                self.eps(start, l);
                self.eps(r, end);
                n
            })
            .collect()
    }

    fn build(&mut self, g: &G, rule: usize, rs: &[usize]) -> (usize, usize, Node) {
        match g {
            G::T(t) => self.token(TokSet::of(&[*t]), rule),
            G::Set(s) => self.token(*s, rule),
            G::R(callee) => {
                let l = self.new_state(Kind::Basic, rule);
                let r = self.new_state(Kind::Basic, rule);
                let start = rs.get(*callee).copied().unwrap_or(0);
                self.edge(l, Edge::Rule { start, follow: r });
                (
                    l,
                    r,
                    Node::Call {
                        state: l,
                        rule: *callee,
                    },
                )
            }
            G::Seq(els) => {
                let mut nodes = Vec::new();
                let mut first: Option<usize> = None;
                let mut last: Option<usize> = None;
                for el in els {
                    let (l, r, n) = self.build(el, rule, rs);
                    if let Some(prev) = last {
                        self.eps(prev, l);
                    }
                    first.get_or_insert(l);
                    last = Some(r);
                    nodes.push(n);
                }
                let l = first.unwrap_or_else(|| self.new_state(Kind::Basic, rule));
                let r = last.unwrap_or(l);
                (l, r, Node::Seq(nodes))
            }
            G::Alt(alts) => {
                let start = self.new_state(Kind::BlockStart, rule);
                let end = self.new_state(Kind::BlockEnd, rule);
                let nodes = self.block(alts, rule, start, end, rs);
                let node = Node::Choice {
                    state: start,
                    alts: nodes,
                    optional: false,
                    ll1: None,
                };
                (start, end, node)
            }
            G::Opt(body) => {
                let start = self.new_state(Kind::BlockStart, rule);
                let end = self.new_state(Kind::BlockEnd, rule);
                let nodes = self.block(alts_of(body), rule, start, end, rs);
                self.eps(start, end);
                let node = Node::Choice {
                    state: start,
                    alts: nodes,
                    optional: true,
                    ll1: None,
                };
                (start, end, node)
            }
            G::Star(body) => self.star(alts_of(body), rule, rs),
            G::Plus(body) => self.plus(alts_of(body), rule, rs),
        }
    }

    /// `( alts )*`: ANTLR's star-loop states around a star block.
    fn star(&mut self, alts: &[G], rule: usize, rs: &[usize]) -> (usize, usize, Node) {
        let blk_start = self.new_state(Kind::StarBlockStart, rule);
        let blk_end = self.new_state(Kind::BlockEnd, rule);
        let nodes = self.block(alts, rule, blk_start, blk_end, rs);
        let entry = self.new_state(Kind::StarLoopEntry, rule);
        let end = self.new_state(Kind::LoopEnd, rule);
        let loopback = self.new_state(Kind::StarLoopBack, rule);
        self.eps(entry, blk_start);
        self.eps(entry, end);
        self.eps(blk_end, loopback);
        self.eps(loopback, entry);
        let body = Box::new(inner(blk_start, nodes));
        let node = Node::Star {
            entry,
            loopback,
            body,
            ll1: None,
        };
        (entry, end, node)
    }

    /// `( alts )+`: a plus block whose end loops back through a decision.
    fn plus(&mut self, alts: &[G], rule: usize, rs: &[usize]) -> (usize, usize, Node) {
        let blk_start = self.new_state(Kind::PlusBlockStart, rule);
        let blk_end = self.new_state(Kind::BlockEnd, rule);
        let nodes = self.block(alts, rule, blk_start, blk_end, rs);
        let loopback = self.new_state(Kind::PlusLoopBack, rule);
        let end = self.new_state(Kind::LoopEnd, rule);
        self.eps(blk_end, loopback);
        self.eps(loopback, blk_start);
        self.eps(loopback, end);
        let body = Box::new(inner(blk_start, nodes));
        let node = Node::Plus {
            start: blk_start,
            loopback,
            body,
            ll1: None,
        };
        (blk_start, end, node)
    }

    fn token(&mut self, set: TokSet, rule: usize) -> (usize, usize, Node) {
        let l = self.new_state(Kind::Basic, rule);
        let r = self.new_state(Kind::Basic, rule);
        self.edge(l, Edge::Tok(r, set));
        (l, r, Node::Match { state: l, set })
    }
}

fn alts_of(g: &G) -> &[G] {
    match g {
        G::Alt(alts) => alts,
        other => std::slice::from_ref(other),
    }
}

/// The code inside a loop: a single alternative, or a choice among several.
fn inner(start: usize, mut nodes: Vec<Node>) -> Node {
    if nodes.len() == 1
        && let Some(n) = nodes.pop()
    {
        return n;
    }
    Node::Choice {
        state: start,
        alts: nodes,
        optional: false,
        ll1: None,
    }
}

impl Atn {
    /// Build the ATN of the OpenFGA grammar.
    pub(crate) fn build() -> Self {
        let mut b = Builder { states: Vec::new() };
        let rule_start: Vec<usize> = (0..RULE_COUNT)
            .map(|r| b.new_state(Kind::RuleStart, r))
            .collect();
        let rule_stop: Vec<usize> = (0..RULE_COUNT)
            .map(|r| b.new_state(Kind::RuleStop, r))
            .collect();
        let mut bodies = Vec::new();
        for (r, g) in rules().iter().enumerate() {
            let (l, rt, node) = b.build(g, r, &rule_start);
            if let (Some(s), Some(e)) = (rule_start.get(r), rule_stop.get(r)) {
                b.eps(*s, l);
                b.eps(rt, *e);
            }
            bodies.push(node);
        }
        // Follow links: the end of a rule leads to what follows each call of it.
        let calls: Vec<(usize, usize)> = b
            .states
            .iter()
            .flat_map(|s| s.edges.iter())
            .filter_map(|e| match e {
                Edge::Rule { start, follow } => Some((*start, *follow)),
                _ => None,
            })
            .collect();
        for (start, follow) in calls {
            let callee = b.states.get(start).map_or(0, |s| s.rule);
            if let Some(stop) = rule_stop.get(callee) {
                b.eps(*stop, follow);
            }
        }
        let mut atn = Self {
            states: b.states,
            rule_start,
            rule_stop,
            bodies,
        };
        let mut bodies = std::mem::take(&mut atn.bodies);
        for body in &mut bodies {
            atn.mark_ll1(body);
        }
        atn.bodies = bodies;
        atn
    }

    pub(crate) fn state(&self, s: usize) -> Option<&State> {
        self.states.get(s)
    }

    /// Fill in which decisions the ANTLR tool would generate as LL(1).
    fn mark_ll1(&self, node: &mut Node) {
        match node {
            Node::Match { .. } | Node::Call { .. } => {}
            Node::Seq(nodes) => nodes.iter_mut().for_each(|n| self.mark_ll1(n)),
            Node::Choice {
                state,
                alts,
                optional,
                ll1,
            } => {
                if let Some(mut looks) = self.decision_ll1(*state) {
                    if *optional {
                        looks.pop();
                    }
                    *ll1 = Some(looks);
                }
                alts.iter_mut().for_each(|n| self.mark_ll1(n));
            }
            Node::Star {
                entry: decision,
                body,
                ll1,
                ..
            }
            | Node::Plus {
                loopback: decision,
                body,
                ll1,
                ..
            } => {
                *ll1 = self
                    .decision_ll1(*decision)
                    .and_then(|l| l.first().copied());
                self.mark_ll1(body);
            }
        }
    }

    /// Each alternative's lookahead when they are disjoint (the tool's test).
    fn decision_ll1(&self, s: usize) -> Option<Vec<TokSet>> {
        let state = self.state(s)?;
        let mut combined = TokSet::EMPTY;
        let mut looks = Vec::new();
        for e in &state.edges {
            let ctx = LookCtx {
                null_base: false,
                stack: Vec::new(),
            };
            let look = self.look(e.target(), ctx, false);
            if look.is_empty() || look.intersects(combined) {
                return None;
            }
            combined.union(look);
            looks.push(look);
        }
        Some(looks)
    }

    /// ANTLR's `LL1Analyzer.LOOK`: the tokens that can come next from `s`.
    pub(crate) fn look(&self, s: usize, ctx: LookCtx, add_eof: bool) -> TokSet {
        let mut out = TokSet::EMPTY;
        let mut busy = HashSet::new();
        self.look_rec(s, ctx, add_eof, &mut out, &mut busy, 0u64);
        out
    }

    fn look_rec(
        &self,
        s: usize,
        mut ctx: LookCtx,
        add_eof: bool,
        out: &mut TokSet,
        busy: &mut HashSet<(usize, LookCtx)>,
        called: u64,
    ) {
        if !busy.insert((s, ctx.clone())) {
            return;
        }
        let Some(state) = self.state(s) else { return };
        if state.kind == Kind::RuleStop {
            if let Some(ret) = ctx.stack.pop() {
                let called = called & !bit(state.rule);
                self.look_rec(ret, ctx, add_eof, out, busy, called);
                return;
            }
            if ctx.null_base {
                out.add(EPSILON);
                return;
            }
            if add_eof {
                out.add(EOF);
                return;
            }
            if state.rule == MAIN {
                // The tool gives start rules an EOF transition.
                out.add(EOF);
                return;
            }
        }
        for e in &state.edges {
            match e {
                Edge::Rule { start, follow } => {
                    let callee = self.state(*start).map_or(0, |x| x.rule);
                    if called & bit(callee) != 0 {
                        continue;
                    }
                    let mut inner = ctx.clone();
                    inner.stack.push(*follow);
                    self.look_rec(*start, inner, add_eof, out, busy, called | bit(callee));
                }
                Edge::Eps(t) => self.look_rec(*t, ctx.clone(), add_eof, out, busy, called),
                Edge::Tok(_, set) => out.union(*set),
            }
        }
    }

    /// `ATN.nextTokens(s)`: lookahead within the rule (`EPSILON` if it can end).
    pub(crate) fn next_tokens(&self, s: usize) -> TokSet {
        let ctx = LookCtx {
            null_base: true,
            stack: Vec::new(),
        };
        self.look(s, ctx, true)
    }

    /// The follow state of the rule invocation at state `s`.
    pub(crate) fn follow_of(&self, s: usize) -> Option<usize> {
        match self.state(s)?.edges.first()? {
            Edge::Rule { follow, .. } => Some(*follow),
            _ => None,
        }
    }
}

fn bit(rule: usize) -> u64 {
    u32::try_from(rule)
        .ok()
        .and_then(|r| 1u64.checked_shl(r))
        .unwrap_or(0)
}
