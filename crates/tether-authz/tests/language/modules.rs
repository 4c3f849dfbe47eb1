//! The `transformer-module/` cases: module files combined into a schema 1.2
//! model (compared with `authorization-model.json` and `expected_modules.json`),
//! or the errors of `expected_errors.json`: transformation errors and
//! model-validation errors, each with its file, line and column.

use std::path::Path;

use serde_json::Value;
use tether_authz::model::{
    ModFile, ModRange, ModuleFile, model_from_modules, model_to_value, parse_json_model,
    parse_mod_file,
};
use tether_authz::{AuthorizationModel, AuthzError};

use super::Tally;

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn json(path: &Path) -> Result<Option<Value>, String> {
    read(path)
        .map(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .transpose()
}

fn module_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    read(&e.path()).map(|c| (name, c))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn expected_modules(dir: &Path) -> Result<Option<Vec<String>>, String> {
    Ok(json(&dir.join("expected_modules.json"))?.map(|v| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect()
    }))
}

type ErrorKey = (String, String, usize, usize);

fn expected_errors(v: &Value) -> Vec<ErrorKey> {
    let mut out: Vec<ErrorKey> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or_default();
            let n = |p: &str| {
                e.pointer(p)
                    .and_then(Value::as_u64)
                    .and_then(|x| usize::try_from(x).ok())
                    .unwrap_or_default()
            };
            let (msg, file) = (s("/msg").to_owned(), s("/file").to_owned());
            (msg, file, n("/line/start"), n("/column/start"))
        })
        .collect();
    out.sort();
    out
}

/// Ok(true) passed, Ok(false) skipped (nothing to compare), Err failed.
fn case(dir: &Path) -> Result<bool, String> {
    let files = module_files(&dir.join("module"));
    let modules: Vec<ModuleFile<'_>> = files
        .iter()
        .map(|(name, contents)| ModuleFile { name, contents })
        .collect();
    let want_modules = expected_modules(dir)?;
    if let Some(want) = json(&dir.join("authorization-model.json"))? {
        let data = if modules.is_empty() {
            parse_json_model(&want.to_string()).map_err(|e| e.to_string())?
        } else {
            let data = model_from_modules(&modules).map_err(|e| e.to_string())?;
            let got = model_to_value(&data);
            if got != want {
                return Err(format!("combined model differs:\n got {got}\nwant {want}"));
            }
            data
        };
        if let Some(want) = want_modules
            && data.module_names() != want
        {
            return Err(format!("modules {:?}, want {want:?}", data.module_names()));
        }
        return Ok(true);
    }
    let Some(errors) = json(&dir.join("expected_errors.json"))? else {
        return Ok(false);
    };
    let want = expected_errors(&errors);
    if want.is_empty() {
        return Ok(false);
    }
    let got: Vec<ErrorKey> = match AuthorizationModel::from_modules(&modules) {
        Ok(_) => Vec::new(),
        Err(AuthzError::InvalidModules(errs)) => {
            let mut v: Vec<ErrorKey> = errs
                .into_iter()
                .map(|e| {
                    let (line, col) = e.error.span.map_or((0, 0), |s| (s.line, s.start_column));
                    (e.error.message, e.file, line, col)
                })
                .collect();
            v.sort();
            v
        }
        Err(other) => return Err(other.to_string()),
    };
    if got == want {
        Ok(true)
    } else {
        Err(format!("errors differ:\n got {got:?}\nwant {want:?}"))
    }
}

pub fn run(dir: &Path, tally: &mut Tally) {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for d in &dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match case(d) {
            Ok(true) => passed += 1,
            Ok(false) => skipped += 1,
            Err(e) => {
                failed += 1;
                tally
                    .failures
                    .push(format!("transformer-module/{name}: {e}"));
            }
        }
    }
    tally.passed += passed;
    tally.failed += failed;
    tally.skipped += skipped;
    println!(
        "transformer-module (schema 1.2 modules): {passed} passed, {failed} failed, {skipped} skipped"
    );
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ModCase {
    name: String,
    #[serde(rename = "modFile")]
    mod_file: String,
    json: Option<String>,
    expected_errors: Option<Vec<Value>>,
}

fn range_value(r: &ModRange) -> Value {
    serde_json::json!({
        "line": { "start": r.line.0, "end": r.line.1 },
        "column": { "start": r.column.0, "end": r.column.1 },
    })
}

fn with_value(value: Value, r: &ModRange) -> Value {
    let mut v = range_value(r);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("value".into(), value);
    }
    v
}

fn mod_file_value(m: &ModFile) -> Value {
    let items: Vec<Value> = m
        .contents
        .value
        .iter()
        .map(|i| with_value(Value::String(i.value.clone()), &i.range))
        .collect();
    serde_json::json!({
        "schema": with_value(Value::String(m.schema.value.clone()), &m.schema.range),
        "contents": with_value(Value::Array(items), &m.contents.range),
    })
}

fn mod_case(case: &ModCase) -> Result<(), String> {
    let result = parse_mod_file(&case.mod_file);
    if let Some(want) = &case.json {
        let want: Value = serde_json::from_str(want).map_err(|e| e.to_string())?;
        let got = result
            .map(|m| mod_file_value(&m))
            .map_err(|e| e.to_string())?;
        return if got == want {
            Ok(())
        } else {
            Err(format!("got {got}\nwant {want}"))
        };
    }
    let key = |msg: &str, line: usize, col: usize| (msg.to_owned(), line, col);
    let mut want: Vec<_> = case
        .expected_errors
        .iter()
        .flatten()
        .map(|e| {
            let n = |p: &str| e.pointer(p).and_then(Value::as_u64).unwrap_or_default() as usize;
            let msg = e
                .pointer("/msg")
                .and_then(Value::as_str)
                .unwrap_or_default();
            key(msg, n("/line/start"), n("/column/start"))
        })
        .collect();
    let mut got: Vec<_> = match result {
        Ok(_) => Vec::new(),
        Err(e) => e
            .model_errors()
            .iter()
            .map(|m| {
                let (l, c) = m.span.map_or((0, 0), |s| (s.line, s.start_column));
                key(&m.message, l, c)
            })
            .collect(),
    };
    want.sort();
    got.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?}\nwant {want:?}"))
    }
}

/// The `fga-mod-transformer-cases.yaml` cases: `fga.mod` parsing and checks.
pub fn run_mod_file_cases(path: &Path, tally: &mut Tally) {
    let text = read(path).unwrap_or_default();
    let cases: Vec<ModCase> = serde_saphyr::from_str(&text).unwrap_or_default();
    let before = (tally.passed, tally.failed);
    for case in &cases {
        tally.record(&format!("fga.mod/{}", case.name), mod_case(case));
    }
    println!(
        "fga-mod-transformer-cases.yaml: {} passed, {} failed",
        tally.passed - before.0,
        tally.failed - before.1
    );
}
