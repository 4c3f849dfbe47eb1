//! ANTLR's adaptive LL(*) prediction (`ParserATNSimulator.adaptivePredict`):
//! SLL lookahead first, full-context LL when SLL meets a conflict, and the
//! same choice of alternative on a syntax error.

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

type Stack = Vec<usize>;

/// One ATN configuration: a state, the alternative it predicts, a call stack
/// (innermost last; empty is the outermost context) and whether it left the
/// decision rule through a follow link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Config {
    state: usize,
    alt: usize,
    stack: Stack,
    dipped: bool,
}

/// Configurations merged ANTLR-style by (state, alt): the stacks of one entry
/// form its (graph-structured) context.
#[derive(Debug, Default)]
struct ConfigSet {
    full_ctx: bool,
    entries: Vec<(usize, usize, BTreeSet<Stack>, bool)>,
    index: HashMap<(usize, usize), usize>,
}

impl ConfigSet {
    fn new(full_ctx: bool) -> Self {
        Self {
            full_ctx,
            ..Self::default()
        }
    }

    fn add(&mut self, c: &Config) {
        let key = (c.state, c.alt);
        let idx = match self.index.get(&key) {
            Some(i) => *i,
            None => {
                self.entries.push((c.state, c.alt, BTreeSet::new(), false));
                self.index.insert(key, self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        let full = self.full_ctx;
        if let Some((_, _, stacks, dipped)) = self.entries.get_mut(idx) {
            *dipped |= c.dipped;
            // Without full context the empty stack is a wildcard that absorbs all.
            if !full && stacks.contains(&Vec::new()) {
                return;
            }
            if !full && c.stack.is_empty() {
                stacks.clear();
            }
            stacks.insert(c.stack.clone());
        }
    }

    fn configs(&self) -> impl Iterator<Item = Config> + '_ {
        self.entries
            .iter()
            .flat_map(|(state, alt, stacks, dipped)| {
                stacks.iter().map(move |s| Config {
                    state: *state,
                    alt: *alt,
                    stack: s.clone(),
                    dipped: *dipped,
                })
            })
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn unique_alt(&self) -> Option<usize> {
        let first = self.entries.first()?.1;
        self.entries.iter().all(|e| e.1 == first).then_some(first)
    }

    /// ANTLR's `getConflictingAltSubsets`: alternatives per (state, context).
    fn alt_subsets(&self) -> Vec<BTreeSet<usize>> {
        let mut map: HashMap<(usize, &BTreeSet<Stack>), BTreeSet<usize>> = HashMap::new();
        for (state, alt, stacks, _) in &self.entries {
            map.entry((*state, stacks)).or_default().insert(*alt);
        }
        map.into_values().collect()
    }

    fn state_has_one_alt(&self) -> bool {
        let mut map: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for (state, alt, _, _) in &self.entries {
            map.entry(*state).or_default().insert(*alt);
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

impl Predictor<'_> {
    fn la(&self, i: usize) -> TokType {
        self.input.get(i).copied().unwrap_or(EOF)
    }

    fn is_stop(&self, s: usize) -> bool {
        self.atn.state(s).is_some_and(|x| x.kind == Kind::RuleStop)
    }

    fn spend(&mut self) -> Result<(), PredictError> {
        *self.budget = self.budget.checked_sub(1).ok_or(PredictError::Budget)?;
        Ok(())
    }

    /// Predict the alternative (1-based) of `decision` at token index `start`;
    /// `outer` is the parser's call stack as follow states, innermost last.
    pub(crate) fn predict(
        &mut self,
        decision: usize,
        start: usize,
        outer: &[usize],
    ) -> Result<usize, PredictError> {
        let s0 = self.start_state(decision, &[], false)?;
        let mut previous = s0;
        let mut i = start;
        loop {
            let t = self.la(i);
            let Some(reach) = self.reach(&previous, t, false)? else {
                return finished_alt(&previous, self).ok_or(PredictError::NoViableAlt {
                    start,
                    offending: i,
                });
            };
            if let Some(alt) = reach.unique_alt() {
                return Ok(alt);
            }
            if self.sll_conflict(&reach) {
                return self.predict_full(decision, start, outer);
            }
            previous = reach;
            if t != EOF {
                i += 1;
            }
        }
    }

    fn predict_full(
        &mut self,
        decision: usize,
        start: usize,
        outer: &[usize],
    ) -> Result<usize, PredictError> {
        let mut previous = self.start_state(decision, outer, true)?;
        let mut i = start;
        loop {
            let t = self.la(i);
            let Some(reach) = self.reach(&previous, t, true)? else {
                return finished_alt(&previous, self).ok_or(PredictError::NoViableAlt {
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
        if reach.entries.iter().all(|e| self.is_stop(e.0)) {
            return true;
        }
        reach.alt_subsets().iter().any(|a| a.len() > 1) && !reach.state_has_one_alt()
    }

    fn start_state(
        &mut self,
        decision: usize,
        outer: &[usize],
        full: bool,
    ) -> Result<ConfigSet, PredictError> {
        let mut set = ConfigSet::new(full);
        let mut busy = HashSet::new();
        let edges = self
            .atn
            .state(decision)
            .map(|s| s.edges.clone())
            .unwrap_or_default();
        for (i, e) in edges.iter().enumerate() {
            let c = Config {
                state: e.target(),
                alt: i + 1,
                stack: outer.to_vec(),
                dipped: false,
            };
            self.closure(c, &mut set, &mut busy, full, false)?;
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
        for c in closure.configs() {
            if self.is_stop(c.state) {
                if full || t == EOF {
                    skipped.push(c);
                }
                continue;
            }
            let Some(state) = self.atn.state(c.state) else {
                continue;
            };
            for e in &state.edges {
                if let Edge::Tok(target, set) = e
                    && set.contains(t)
                {
                    intermediate.add(&Config {
                        state: *target,
                        ..c.clone()
                    });
                }
            }
        }
        let mut from_intermediate = false;
        let mut reach = if skipped.is_empty()
            && t != EOF
            && (intermediate.entries.len() == 1 || intermediate.unique_alt().is_some())
        {
            from_intermediate = true;
            intermediate
        } else {
            let mut reach = ConfigSet::new(full);
            let mut busy = HashSet::new();
            for c in intermediate.configs() {
                self.closure(c, &mut reach, &mut busy, full, t == EOF)?;
            }
            reach
        };
        if t == EOF {
            reach = self.only_stop_states(reach, from_intermediate);
        }
        if !skipped.is_empty() && (!full || !reach.entries.iter().any(|e| self.is_stop(e.0))) {
            for c in &skipped {
                reach.add(c);
            }
        }
        Ok((!reach.is_empty()).then_some(reach))
    }

    /// ANTLR's `removeAllConfigsNotInRuleStopState`.
    fn only_stop_states(&self, set: ConfigSet, look_to_end: bool) -> ConfigSet {
        if set.entries.iter().all(|e| self.is_stop(e.0)) {
            return set;
        }
        let mut out = ConfigSet::new(set.full_ctx);
        for c in set.configs() {
            if self.is_stop(c.state) {
                out.add(&c);
                continue;
            }
            let Some(state) = self.atn.state(c.state) else {
                continue;
            };
            if look_to_end
                && state.only_epsilon()
                && self.atn.next_tokens(c.state).contains(EPSILON)
                && let Some(stop) = self.atn.rule_stop.get(state.rule)
            {
                out.add(&Config { state: *stop, ..c });
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
        full: bool,
        eof_as_eps: bool,
    ) -> Result<(), PredictError> {
        let mut work = vec![start];
        while let Some(c) = work.pop() {
            self.spend()?;
            if !busy.insert(c.clone()) {
                continue;
            }
            let Some(state) = self.atn.state(c.state) else {
                continue;
            };
            if state.kind == Kind::RuleStop {
                if let Some((ret, rest)) = c.stack.split_last() {
                    work.push(Config {
                        state: *ret,
                        stack: rest.to_vec(),
                        ..c
                    });
                    continue;
                }
                if full {
                    set.add(&c);
                    continue;
                }
            }
            if !state.only_epsilon() {
                set.add(&c);
            }
            let leaving = state.kind == Kind::RuleStop;
            for e in &state.edges {
                match e {
                    Edge::Eps(t) => work.push(Config {
                        state: *t,
                        dipped: c.dipped || leaving,
                        ..c.clone()
                    }),
                    Edge::Rule { start, follow } => {
                        let mut stack = c.stack.clone();
                        stack.push(*follow);
                        work.push(Config {
                            state: *start,
                            stack,
                            ..c.clone()
                        });
                    }
                    Edge::Tok(t, set) if eof_as_eps && set.contains(EOF) => work.push(Config {
                        state: *t,
                        ..c.clone()
                    }),
                    Edge::Tok(..) => {}
                }
            }
        }
        Ok(())
    }
}

/// ANTLR's `getAltThatFinishedDecisionEntryRule`.
fn finished_alt(set: &ConfigSet, p: &Predictor<'_>) -> Option<usize> {
    set.entries
        .iter()
        .filter(|(state, _, stacks, dipped)| {
            *dipped || (p.is_stop(*state) && stacks.contains(&Vec::new()))
        })
        .map(|e| e.1)
        .min()
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
