//! Syntax, semantic and JSON validation cases: counted, printed, and held to
//! a floor so that a case that passes cannot silently regress.

use std::path::Path;

use serde::Deserialize;
use tether_authz::{AuthorizationModel, ModelError};

use super::Tally;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Case {
    name: String,
    dsl: Option<String>,
    json: Option<String>,
    expected_errors: Option<Vec<Expected>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Expected {
    msg: String,
    line: Option<Range>,
    column: Option<Range>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default)]
struct Range {
    start: usize,
}

/// The counts reached so far per file: (file, cases, accept/reject agrees,
/// messages match, messages and positions match). Raise them, never lower them.
const FLOORS: &[(&str, usize, usize, usize, usize)] = &[
    ("dsl-semantic-validation-cases.yaml", 91, 91, 91, 91),
    ("dsl-syntax-validation-cases.yaml", 81, 81, 81, 81),
    ("json-validation-cases.yaml", 5, 5, 5, 5),
];

#[derive(Default)]
struct Score {
    total: usize,
    outcome: usize,
    messages: usize,
    exact: usize,
    misses: Vec<String>,
}

fn load(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(&text, options).unwrap_or_default()
}

fn score_case(case: &Case, score: &mut Score) {
    let expected = case.expected_errors.clone_list();
    let result = match (&case.dsl, &case.json) {
        (Some(dsl), _) => AuthorizationModel::from_dsl(dsl),
        (None, Some(json)) => AuthorizationModel::from_json(json),
        (None, None) => return,
    };
    score.total += 1;
    let got: Vec<ModelError> = match &result {
        Ok(_) => Vec::new(),
        Err(e) => {
            let errs = e.model_errors().to_vec();
            if errs.is_empty() {
                vec![ModelError {
                    message: e.to_string(),
                    kind: tether_authz::ModelErrorKind::Other,
                    symbol: None,
                    span: None,
                }]
            } else {
                errs
            }
        }
    };
    if got.is_empty() == expected.is_empty() {
        score.outcome += 1;
    }
    let mut want_msgs: Vec<&str> = expected.iter().map(|e| e.msg.trim()).collect();
    let mut got_msgs: Vec<&str> = got.iter().map(|e| e.message.as_str()).collect();
    want_msgs.sort_unstable();
    got_msgs.sort_unstable();
    if want_msgs != got_msgs {
        score.misses.push(format!(
            "{}: got {got_msgs:?} want {want_msgs:?}",
            case.name
        ));
        return;
    }
    score.messages += 1;
    let positions_ok = expected.iter().all(|w| {
        got.iter().any(|g| {
            g.message == w.msg.trim()
                && match (w.line, w.column, g.span) {
                    (Some(l), Some(c), Some(s)) => s.line == l.start && s.start_column == c.start,
                    (None, None, _) => true,
                    _ => false,
                }
        })
    });
    if positions_ok {
        score.exact += 1;
    } else {
        let spans: Vec<_> = got.iter().map(|g| g.span).collect();
        score
            .misses
            .push(format!("{}: positions differ, got {spans:?}", case.name));
    }
}

trait CloneList {
    fn clone_list(&self) -> Vec<Expected>;
}

impl CloneList for Option<Vec<Expected>> {
    fn clone_list(&self) -> Vec<Expected> {
        self.iter()
            .flatten()
            .map(|e| Expected {
                msg: e.msg.clone(),
                line: e.line,
                column: e.column,
            })
            .collect()
    }
}

/// Score every validation file; returns a description of each regression
/// below [`FLOORS`].
pub fn run(dir: &Path, _tally: &mut Tally) -> Vec<String> {
    let verbose = std::env::var_os("TETHER_LANG_VERBOSE").is_some();
    let mut regressions = Vec::new();
    for &(file, min_total, min_outcome, min_messages, min_exact) in FLOORS {
        let cases = load(&dir.join(file));
        let mut score = Score::default();
        for case in &cases {
            score_case(case, &mut score);
        }
        println!(
            "{file}: {} cases; accept/reject agrees {}, messages match {}, messages+positions match {}",
            score.total, score.outcome, score.messages, score.exact
        );
        if verbose || score.exact < min_exact {
            for m in &score.misses {
                println!("  MISS {m}");
            }
        }
        let got = (score.total, score.outcome, score.messages, score.exact);
        let floor = (min_total, min_outcome, min_messages, min_exact);
        if got.0 < floor.0 || got.1 < floor.1 || got.2 < floor.2 || got.3 < floor.3 {
            regressions.push(format!(
                "{file}: (cases, accept/reject, messages, messages+positions) = {got:?}, floor {floor:?}"
            ));
        }
    }
    regressions
}
