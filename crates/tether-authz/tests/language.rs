//! Language runner over `../shared/conformance/openfga-language/tests/data/`.
//!
//! Prints per-section pass counts and a closing `N passed, M failed, K skipped` line,
//! and fails if a transformer case fails or a validation count drops below its floor.
//! Module (schema 1.2) cases whose only expected errors are model-validation errors
//! are counted as skipped and reported.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tether_authz::dsl::{parse_dsl, print_dsl, syntax_errors, try_print_dsl};
use tether_authz::model::{model_to_value, parse_json_model};

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/openfga-language/tests/data"
    ))
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.passed += 1,
            Err(e) => {
                self.failed += 1;
                self.failures.push(format!("{name}: {e}"));
            }
        }
    }
}

/// The transformer cases are syntax-only (some are not semantically valid).
fn dsl_to_json(dsl: &str) -> Result<Value, String> {
    let (data, _) = parse_dsl(dsl).map_err(|e| e.to_string())?;
    Ok(model_to_value(&data))
}

fn transformer_case(dir: &Path) -> Result<(), String> {
    let dsl =
        std::fs::read_to_string(dir.join("authorization-model.fga")).map_err(|e| e.to_string())?;
    let json_text =
        std::fs::read_to_string(dir.join("authorization-model.json")).map_err(|e| e.to_string())?;
    let expected: Value = serde_json::from_str(&json_text).map_err(|e| e.to_string())?;
    let got = dsl_to_json(&dsl)?;
    if got != expected {
        return Err(format!("DSL->JSON mismatch:\n got {got}\nwant {expected}"));
    }
    let data = parse_json_model(&json_text).map_err(|e| e.to_string())?;
    let printed = print_dsl(&data);
    let (reparsed, _) = parse_dsl(&printed).map_err(|e| format!("{e}\n{printed}"))?;
    if model_to_value(&reparsed) != expected {
        return Err(format!("JSON->DSL->JSON mismatch:\n{printed}"));
    }
    Ok(())
}

fn run_transformer(tally: &mut Tally) {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir().join("transformer"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let before = (tally.passed, tally.failed);
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tally.record(&format!("transformer/{name}"), transformer_case(dir));
    }
    println!(
        "transformer (DSL->JSON and JSON->DSL->JSON): {} passed, {} failed",
        tally.passed - before.0,
        tally.failed - before.1
    );
    modules::run(&data_dir().join("transformer-module"), tally);
    modules::run_mod_file_cases(&data_dir().join("fga-mod-transformer-cases.yaml"), tally);
}

#[path = "language/modules.rs"]
mod modules;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct JsonToDslCase {
    name: String,
    json: String,
    valid: Option<bool>,
    error_message: Option<String>,
}

/// A JSON model the DSL cannot express gives OpenFGA's error; one it can is
/// printed as DSL that parses.
fn json_to_dsl_case(case: &JsonToDslCase) -> Result<(), String> {
    let data = parse_json_model(&case.json).map_err(|e| e.to_string())?;
    match (try_print_dsl(&data), case.valid.unwrap_or(true)) {
        (Ok(text), true) => {
            let errors = syntax_errors(&text);
            if !errors.is_empty() {
                return Err(format!("printed DSL does not parse: {errors:?}\n{text}"));
            }
            parse_dsl(&text).map(|_| ()).map_err(|e| e.to_string())
        }
        (Err(e), false) => {
            let got = e.model_errors().first().map(|m| m.message.clone());
            if got == case.error_message {
                Ok(())
            } else {
                Err(format!("got {got:?}, want {:?}", case.error_message))
            }
        }
        (Ok(text), false) => Err(format!("printed, want an error:\n{text}")),
        (Err(e), true) => Err(e.to_string()),
    }
}

fn run_json_to_dsl(tally: &mut Tally) {
    let path = data_dir().join("json-syntax-transformer-validation-cases.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let cases: Vec<JsonToDslCase> = serde_saphyr::from_str(&text).unwrap_or_default();
    let before = (tally.passed, tally.failed);
    for case in &cases {
        tally.record(
            &format!("json-to-dsl/{}", case.name),
            json_to_dsl_case(case),
        );
    }
    println!(
        "json-syntax-transformer-validation-cases.yaml: {} passed, {} failed",
        tally.passed - before.0,
        tally.failed - before.1
    );
}

#[path = "language/validation.rs"]
mod validation;

#[test]
fn language_suite() {
    assert!(
        data_dir().is_dir(),
        "language test data not found at {}",
        data_dir().display()
    );
    let mut tally = Tally::default();
    run_transformer(&mut tally);
    run_json_to_dsl(&mut tally);
    let regressions = validation::run(&data_dir(), &mut tally);
    for f in &tally.failures {
        println!("FAIL {f}");
    }
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    assert_eq!(tally.failed, 0, "transformer cases failed");
    assert!(
        regressions.is_empty(),
        "validation counts regressed:\n{}",
        regressions.join("\n")
    );
}
