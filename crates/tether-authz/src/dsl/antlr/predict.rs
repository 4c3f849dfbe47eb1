//! ANTLR's adaptive LL(*) prediction (`ParserATNSimulator.adaptivePredict`):
//! SLL lookahead first, full-context LL when SLL meets a conflict, and the
//! same choice of alternative on a syntax error.
//!
//! Call stacks are graph-structured as in ANTLR (`PredictionContext`):
//! hash-consed tries of return states, merged per (state, alternative), so
//! nested parentheses cost polynomial, not exponential, work.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::atn::{Atn, Edge, Kind};
use super::tokens::{EOF, EPSILON, TokType};

/// A prediction failure: no alternative can match the input from
/// `start` (token index) up to `offending`.
#[derive(Debug)]
pub(crate) enum PredictError {
    NoViableAlt {
        start: usize,
        offending: usize,
    },
    /// The work budget ran out.
    Budget,
}

/// A context id in the arena.
type Ctx = usize;

/// The empty context (the outermost rule; a wildcard in SLL mode).
const EMPTY: Ctx = 0;

/// A set of call stacks: whether it holds the empty stack, and the stacks
/// grouped by their top return state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CtxNode {
    empty: bool,
    entries: Vec<(usize, Ctx)>,
}

/// Hash-consed contexts: equal sets of stacks have equal ids.
#[derive(Debug)]
struct Contexts {
    nodes: Vec<CtxNode>,
    ids: HashMap<CtxNode, Ctx>,
    merges: HashMap<(Ctx, Ctx, bool), Ctx>,
}

impl Contexts {
    fn new() -> Self {
        let empty = CtxNode {
            empty: true,
            entries: Vec::new(),
        };
        Self {
            nodes: vec![empty.clone()],
            ids: HashMap::from([(empty, EMPTY)]),
            merges: HashMap::new(),
        }
    }

    fn intern(&mut self, node: CtxNode) -> Ctx {
        if let Some(id) = self.ids.get(&node) {
            return *id;
        }
        self.nodes.push(node.clone());
        let id = self.nodes.len() - 1;
        self.ids.insert(node, id);
        id
    }

    fn node(&self, c: Ctx) -> Option<&CtxNode> {
        self.nodes.get(c)
    }

    fn push(&mut self, parent: Ctx, ret: usize) -> Ctx {
        self.intern(CtxNode {
            empty: false,
            entries: vec![(ret, parent)],
        })
    }

    fn has_empty(&self, c: Ctx) -> bool {
        self.node(c).is_some_and(|n| n.empty)
    }

    /// Union of two contexts; with `wildcard` (SLL) the empty stack absorbs all.
    fn merge(&mut self, a: Ctx, b: Ctx, wildcard: bool) -> Ctx {
        if a == b {
            return a;
        }
        if let Some(m) = self.merges.get(&(a, b, wildcard)) {
            return *m;
        }
        let (Some(na), Some(nb)) = (self.node(a).cloned(), self.node(b).cloned()) else {
            return a;
        };
        let result = if wildcard && (na.empty || nb.empty) {
            EMPTY
        } else {
            let mut entries: Vec<(usize, Ctx)> = Vec::new();
            let (mut i, mut j) = (0, 0);
            loop {
                match (na.entries.get(i), nb.entries.get(j)) {
                    (Some(x), Some(y)) if x.0 == y.0 => {
                        let p = self.merge(x.1, y.1, wildcard);
                        entries.push((x.0, p));
                        i += 1;
                        j += 1;
                    }
                    (Some(x), Some(y)) if x.0 < y.0 => {
                        entries.push(*x);
                        i += 1;
                    }
                    (Some(_), Some(y)) | (None, Some(y)) => {
                        entries.push(*y);
                        j += 1;
                    }
                    (Some(x), None) => {
                        entries.push(*x);
                        i += 1;
                    }
                    (None, None) => break,
                }
            }
            self.intern(CtxNode {
                empty: na.empty || nb.empty,
                entries,
            })
        };
        self.merges.insert((a, b, wildcard), result);
        result
    }
}

/// One ATN configuration: a state, the alternative it predicts, its call
/// stacks and whether it left the decision rule through a follow link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Config {
    state: usize,
    alt: usize,
    ctx: Ctx,
    dipped: bool,
}

/// Configurations merged ANTLR-style by (state, alt).
#[derive(Debug, Default)]
struct ConfigSet {
    full_ctx: bool,
    configs: Vec<Config>,
    index: HashMap<(usize, usize), usize>,
}

impl ConfigSet {
    fn new(full_ctx: bool) -> Self {
        Self {
            full_ctx,
            ..Self::default()
        }
    }

    fn add(&mut self, c: Config, ctxs: &mut Contexts) {
        match self.index.get(&(c.state, c.alt)) {
            Some(i) => {
                if let Some(existing) = self.configs.get_mut(*i) {
                    existing.ctx = ctxs.merge(existing.ctx, c.ctx, !self.full_ctx);
                    existing.dipped |= c.dipped;
                }
            }
            None => {
                self.index.insert((c.state, c.alt), self.configs.len());
                self.configs.push(c);
            }
        }
    }

    fn unique_alt(&self) -> Option<usize> {
        let first = self.configs.first()?.alt;
        self.configs.iter().all(|c| c.alt == first).then_some(first)
    }

    /// ANTLR's `getConflictingAltSubsets`: alternatives per (state, context).
    fn alt_subsets(&self) -> Vec<BTreeSet<usize>> {
        let mut map: HashMap<(usize, Ctx), BTreeSet<usize>> = HashMap::new();
        for c in &self.configs {
            map.entry((c.state, c.ctx)).or_default().insert(c.alt);
        }
        map.into_values().collect()
    }

    fn state_has_one_alt(&self) -> bool {
        let mut map: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for c in &self.configs {
            map.entry(c.state).or_default().insert(c.alt);
        }
        map.values().any(|a| a.len() == 1)
    }
}

pub(crate) struct Predictor<'a> {
    pub atn: &'a Atn,
    /// Token types of the input, ending with `EOF`.
    pub input: &'a [TokType],
    pub budget: &'a mut u64,
}

/// Prediction state for one decision.
struct Run<'p, 'a> {
    p: &'p mut Predictor<'a>,
    ctxs: Contexts,
}

impl Predictor<'_> {
    /// Predict the alternative (1-based) of `decision` at token index `start`;
    /// `outer` is the parser's call stack as follow states, innermost last.
    pub(crate) fn predict(
        &mut self,
        decision: usize,
        start: usize,
        outer: &[usize],
    ) -> Result<usize, PredictError> {
        let mut run = Run {
            p: self,
            ctxs: Contexts::new(),
        };
        run.sll(decision, start, outer)
    }
}

impl Run<'_, '_> {
    fn la(&self, i: usize) -> TokType {
        self.p.input.get(i).copied().unwrap_or(EOF)
    }

    fn is_stop(&self, s: usize) -> bool {
        self.p
            .atn
            .state(s)
            .is_some_and(|x| x.kind == Kind::RuleStop)
    }

    fn spend(&mut self) -> Result<(), PredictError> {
        *self.p.budget = self.p.budget.checked_sub(1).ok_or(PredictError::Budget)?;
        Ok(())
    }

    fn sll(
        &mut self,
        decision: usize,
        start: usize,
        outer: &[usize],
    ) -> Result<usize, PredictError> {
        let mut previous = self.start_state(decision, EMPTY, false)?;
        let mut i = start;
        loop {
            let t = self.la(i);
            let Some(reach) = self.reach(&previous, t, false)? else {
                return self
                    .finished_alt(&previous)
                    .ok_or(PredictError::NoViableAlt {
                        start,
                        offending: i,
                    });
            };
            if let Some(alt) = reach.unique_alt() {
                return Ok(alt);
            }
            if self.sll_conflict(&reach) {
                let mut ctx = EMPTY;
                for follow in outer {
                    ctx = self.ctxs.push(ctx, *follow);
                }
                return self.full(decision, start, ctx);
            }
            previous = reach;
            if t != EOF {
                i += 1;
            }
        }
    }

    fn full(&mut self, decision: usize, start: usize, outer: Ctx) -> Result<usize, PredictError> {
        let mut previous = self.start_state(decision, outer, true)?;
        let mut i = start;
        loop {
            let t = self.la(i);
            let Some(reach) = self.reach(&previous, t, true)? else {
                return self
                    .finished_alt(&previous)
                    .ok_or(PredictError::NoViableAlt {
                        start,
                        offending: i,
                    });
            };
            if let Some(alt) = reach.unique_alt() {
                return Ok(alt);
            }
            if let Some(alt) = single_viable_alt(&reach.alt_subsets()) {
                return Ok(alt);
            }
            previous = reach;
            if t != EOF {
                i += 1;
            }
        }
    }

    fn sll_conflict(&self, reach: &ConfigSet) -> bool {
        if reach.configs.iter().all(|c| self.is_stop(c.state)) {
            return true;
        }
        reach.alt_subsets().iter().any(|a| a.len() > 1) && !reach.state_has_one_alt()
    }

    /// ANTLR's `getAltThatFinishedDecisionEntryRule`.
    fn finished_alt(&self, set: &ConfigSet) -> Option<usize> {
        set.configs
            .iter()
            .filter(|c| c.dipped || (self.is_stop(c.state) && self.ctxs.has_empty(c.ctx)))
            .map(|c| c.alt)
            .min()
    }

    fn start_state(
        &mut self,
        decision: usize,
        ctx: Ctx,
        full: bool,
    ) -> Result<ConfigSet, PredictError> {
        let mut set = ConfigSet::new(full);
        let mut busy = HashSet::new();
        let targets: Vec<usize> = self
            .p
            .atn
            .state(decision)
            .map(|s| s.edges.iter().map(Edge::target).collect())
            .unwrap_or_default();
        for (i, target) in targets.into_iter().enumerate() {
            let c = Config {
                state: target,
                alt: i + 1,
                ctx,
                dipped: false,
            };
            self.closure(c, &mut set, &mut busy, false)?;
        }
        Ok(set)
    }

    /// ANTLR's `computeReachSet`.
    fn reach(
        &mut self,
        closure: &ConfigSet,
        t: TokType,
        full: bool,
    ) -> Result<Option<ConfigSet>, PredictError> {
        let mut intermediate = ConfigSet::new(full);
        let mut skipped = Vec::new();
        let atn = self.p.atn;
        for c in &closure.configs {
            if self.is_stop(c.state) {
                if full || t == EOF {
                    skipped.push(*c);
                }
                continue;
            }
            let Some(state) = atn.state(c.state) else {
                continue;
            };
            for e in &state.edges {
                if let Edge::Tok(target, set) = e
                    && set.contains(t)
                {
                    intermediate.add(
                        Config {
                            state: *target,
                            ..*c
                        },
                        &mut self.ctxs,
                    );
                }
            }
        }
        let mut from_intermediate = false;
        let mut reach = if skipped.is_empty()
            && t != EOF
            && (intermediate.configs.len() == 1 || intermediate.unique_alt().is_some())
        {
            from_intermediate = true;
            intermediate
        } else {
            let mut reach = ConfigSet::new(full);
            let mut busy = HashSet::new();
            for c in &intermediate.configs {
                self.closure(*c, &mut reach, &mut busy, t == EOF)?;
            }
            reach
        };
        if t == EOF {
            reach = self.only_stop_states(reach, from_intermediate);
        }
        if !skipped.is_empty() && (!full || !reach.configs.iter().any(|c| self.is_stop(c.state))) {
            for c in skipped {
                reach.add(c, &mut self.ctxs);
            }
        }
        Ok((!reach.configs.is_empty()).then_some(reach))
    }

    /// ANTLR's `removeAllConfigsNotInRuleStopState`.
    fn only_stop_states(&mut self, set: ConfigSet, look_to_end: bool) -> ConfigSet {
        if set.configs.iter().all(|c| self.is_stop(c.state)) {
            return set;
        }
        let atn = self.p.atn;
        let mut out = ConfigSet::new(set.full_ctx);
        for c in &set.configs {
            if self.is_stop(c.state) {
                out.add(*c, &mut self.ctxs);
                continue;
            }
            let Some(state) = atn.state(c.state) else {
                continue;
            };
            if look_to_end
                && state.only_epsilon()
                && atn.next_tokens(c.state).contains(EPSILON)
                && let Some(stop) = atn.rule_stop.get(state.rule)
            {
                out.add(Config { state: *stop, ..*c }, &mut self.ctxs);
            }
        }
        out
    }

    /// ANTLR's `closure`: follow epsilon, rule and follow-link transitions.
    fn closure(
        &mut self,
        start: Config,
        set: &mut ConfigSet,
        busy: &mut HashSet<Config>,
        eof_as_eps: bool,
    ) -> Result<(), PredictError> {
        let atn = self.p.atn;
        let full = set.full_ctx;
        let mut work = vec![start];
        while let Some(c) = work.pop() {
            self.spend()?;
            if !busy.insert(c) {
                continue;
            }
            let Some(state) = atn.state(c.state) else {
                continue;
            };
            if state.kind == Kind::RuleStop {
                let node = self.ctxs.node(c.ctx).cloned().unwrap_or(CtxNode {
                    empty: true,
                    entries: Vec::new(),
                });
                for (ret, parent) in node.entries {
                    work.push(Config {
                        state: ret,
                        ctx: parent,
                        ..c
                    });
                }
                if !node.empty {
                    continue;
                }
                if full {
                    set.add(Config { ctx: EMPTY, ..c }, &mut self.ctxs);
                    continue;
                }
                // No context: chase the follow links (global FOLLOW).
            }
            let c = if state.kind == Kind::RuleStop {
                Config { ctx: EMPTY, ..c }
            } else {
                c
            };
            if !state.only_epsilon() {
                set.add(c, &mut self.ctxs);
            }
            let leaving = state.kind == Kind::RuleStop;
            for e in &state.edges {
                match e {
                    Edge::Eps(t) => work.push(Config {
                        state: *t,
                        dipped: c.dipped || leaving,
                        ..c
                    }),
                    Edge::Rule { start, follow } => {
                        let ctx = self.ctxs.push(c.ctx, *follow);
                        work.push(Config {
                            state: *start,
                            ctx,
                            ..c
                        });
                    }
                    Edge::Tok(t, set) if eof_as_eps && set.contains(EOF) => {
                        work.push(Config { state: *t, ..c })
                    }
                    Edge::Tok(..) => {}
                }
            }
        }
        Ok(())
    }
}

/// ANTLR's `getSingleViableAlt`.
fn single_viable_alt(subsets: &[BTreeSet<usize>]) -> Option<usize> {
    let mut viable = BTreeSet::new();
    for s in subsets {
        viable.insert(*s.first()?);
        if viable.len() > 1 {
            return None;
        }
    }
    viable.first().copied()
}
