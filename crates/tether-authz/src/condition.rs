//! Conditions: CEL expressions with OpenFGA's typed parameters.
//!
//! Evaluation is bounded: the expression length is capped, the CEL parser has a
//! recursion limit, and before each evaluation a static cost estimate
//! (AST nodes × (largest collection + 1) ^ comprehension nesting) is checked
//! against [`MAX_EVALUATION_COST`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::extractors::This;
use cel::objects::{Key, Opaque};
use cel::{Context, Env, ExecutionError, Program, Value};
use serde_json::{Map as JsonMap, Value as Json};

use crate::error::{AuthzError, ModelError, ModelErrorKind};
use crate::model::{ConditionDefinition, ParamType};

/// Longest accepted condition expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 8 * 1024;
/// Budget of the static cost estimate of one evaluation.
pub const MAX_EVALUATION_COST: u64 = 1_000_000;
/// Deepest accepted nesting of JSON context values.
const MAX_VALUE_DEPTH: usize = 32;

/// A condition compiled once per model.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    def: ConditionDefinition,
    program: Arc<Program>,
    nodes: u64,
    comprehension_depth: u32,
}

/// An IP address value (`ipaddress` parameter type).
#[derive(Debug, PartialEq, Eq)]
struct IpAddress(IpAddr);

impl Opaque for IpAddress {
    fn runtime_type_name(&self) -> &str {
        "ipaddress"
    }
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

fn invalid(def_name: &str, msg: String) -> AuthzError {
    AuthzError::InvalidModel(vec![ModelError {
        message: format!("invalid condition '{def_name}': {msg}"),
        kind: ModelErrorKind::InvalidCondition,
        symbol: Some(def_name.to_owned()),
        span: None,
    }])
}

impl CompiledCondition {
    /// Compile (parse) a condition's CEL expression.
    pub fn compile(def: &ConditionDefinition) -> Result<Self, AuthzError> {
        if def.expression.len() > MAX_EXPRESSION_LEN {
            return Err(invalid(&def.name, "expression too long".into()));
        }
        let program =
            Program::compile(&def.expression).map_err(|e| invalid(&def.name, e.to_string()))?;
        let (nodes, comprehension_depth) = measure(program.expression());
        Ok(Self {
            def: def.clone(),
            program: Arc::new(program),
            nodes,
            comprehension_depth,
        })
    }

    /// Condition name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Evaluate with the request context and the tuple's stored context
    /// (the tuple's values win on a clash, as in OpenFGA).
    pub fn evaluate(
        &self,
        request: &JsonMap<String, Json>,
        stored: Option<&JsonMap<String, Json>>,
    ) -> Result<bool, AuthzError> {
        BASE.with(|base| {
            let base = base.as_ref().map_err(|e| self.eval_error(e.clone()))?;
            self.evaluate_in(base.new_inner_scope(), request, stored)
        })
    }

    fn evaluate_in(
        &self,
        mut ctx: Context<'_, '_>,
        request: &JsonMap<String, Json>,
        stored: Option<&JsonMap<String, Json>>,
    ) -> Result<bool, AuthzError> {
        let mut max_size = 0usize;
        for (name, ptype) in &self.def.parameters {
            let value = stored
                .and_then(|s| s.get(name))
                .or_else(|| request.get(name));
            let Some(value) = value.filter(|v| !v.is_null() || *ptype == ParamType::Any) else {
                // As in OpenFGA, any missing declared parameter is an error.
                return Err(self.missing(request, stored, name));
            };
            let converted = convert(value, ptype, 0).map_err(|m| {
                self.eval_error(format!(
                    "parameter '{name}' is not a valid {}: {m}",
                    ptype.dsl_name()
                ))
            })?;
            max_size = max_size.max(collection_size(value));
            ctx.add_variable_from_value(name.clone(), converted);
        }
        self.check_cost(max_size)?;
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => {
                Err(self.eval_error(format!("expected a bool result, got {:?}", other.type_of())))
            }
            Err(ExecutionError::UndeclaredReference(name)) => {
                Err(self.missing(request, stored, &name))
            }
            Err(e) => Err(self.eval_error(e.to_string())),
        }
    }

    fn check_cost(&self, max_size: usize) -> Result<(), AuthzError> {
        let base = u64::try_from(max_size)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let cost = self
            .nodes
            .saturating_mul(base.saturating_pow(self.comprehension_depth));
        if cost > MAX_EVALUATION_COST {
            return Err(self.eval_error("evaluation cost exceeds the budget".into()));
        }
        Ok(())
    }

    fn missing(
        &self,
        request: &JsonMap<String, Json>,
        stored: Option<&JsonMap<String, Json>>,
        first: &str,
    ) -> AuthzError {
        let mut missing: Vec<String> = self
            .def
            .parameters
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !request.contains_key(n) && !stored.is_some_and(|s| s.contains_key(n)))
            .collect();
        if missing.is_empty() {
            missing.push(first.to_owned());
        }
        AuthzError::MissingConditionParameters {
            condition: self.def.name.clone(),
            tuple: String::new(),
            missing,
        }
    }

    fn eval_error(&self, message: String) -> AuthzError {
        AuthzError::ConditionEvaluation {
            condition: self.def.name.clone(),
            message,
        }
    }
}

thread_local! {
    /// The standard environment with `ipaddress` and `in_cidr`, built once per
    /// thread; each evaluation binds its parameters in a child scope.
    static BASE: Result<Context<'static, 'static>, String> = {
        let mut ctx = Context::with_env(env());
        register_functions(&mut ctx).map(|()| ctx).map_err(|e| e.to_string())
    };
}

fn register_functions(ctx: &mut Context<'_, '_>) -> Result<(), cel::DeclarationError> {
    ctx.add_function(
        "ipaddress",
        |s: Arc<String>| -> Result<Value, ExecutionError> {
            parse_ip(&s)
                .map(|ip| Value::Opaque(Arc::new(IpAddress(ip))))
                .map_err(|e| ExecutionError::function_error("ipaddress", e))
        },
    )?;
    ctx.add_function(
        "in_cidr",
        |This(this): This<Value>, cidr: Arc<String>| -> Result<bool, ExecutionError> {
            let Value::Opaque(o) = this else {
                return Err(ExecutionError::function_error(
                    "in_cidr",
                    "receiver is not an ipaddress",
                ));
            };
            let ip = o.downcast_ref::<IpAddress>().ok_or_else(|| {
                ExecutionError::function_error("in_cidr", "receiver is not an ipaddress")
            })?;
            let net: ipnet::IpNet = cidr
                .parse()
                .map_err(|_| ExecutionError::function_error("in_cidr", "invalid CIDR"))?;
            Ok(net.contains(&ip.0))
        },
    )
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|e| format!("invalid IP address '{s}': {e}"))
}

/// Count AST nodes and the deepest comprehension nesting, iteratively.
fn measure(root: &IdedExpr) -> (u64, u32) {
    let mut nodes = 0u64;
    let mut max_depth = 0u32;
    let mut stack: Vec<(&IdedExpr, u32)> = vec![(root, 0)];
    while let Some((e, depth)) = stack.pop() {
        nodes = nodes.saturating_add(1);
        max_depth = max_depth.max(depth);
        match &e.expr {
            Expr::Call(c) => {
                stack.extend(c.target.iter().map(|t| (t.as_ref(), depth)));
                stack.extend(c.args.iter().map(|a| (a, depth)));
            }
            Expr::Comprehension(c) => {
                stack.push((&c.iter_range, depth));
                stack.push((&c.accu_init, depth));
                for inner in [&c.loop_cond, &c.loop_step, &c.result] {
                    stack.push((inner, depth + 1));
                }
            }
            Expr::List(l) => stack.extend(l.elements.iter().map(|x| (x, depth))),
            Expr::Map(m) => push_entries(&mut stack, &m.entries, depth),
            Expr::Struct(s) => push_entries(&mut stack, &s.entries, depth),
            Expr::Select(s) => stack.push((&s.operand, depth)),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    (nodes, max_depth)
}

fn push_entries<'a>(
    stack: &mut Vec<(&'a IdedExpr, u32)>,
    entries: &'a [cel::common::ast::IdedEntryExpr],
    depth: u32,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(f) => stack.push((&f.value, depth)),
            EntryExpr::MapEntry(m) => {
                stack.push((&m.key, depth));
                stack.push((&m.value, depth));
            }
        }
    }
}

fn collection_size(v: &Json) -> usize {
    match v {
        Json::Array(a) => a.iter().map(collection_size).fold(a.len(), usize::max),
        Json::Object(o) => o.values().map(collection_size).fold(o.len(), usize::max),
        _ => 0,
    }
}

/// Convert a JSON context value to a CEL value of the declared type.
fn convert(v: &Json, t: &ParamType, depth: usize) -> Result<Value, String> {
    if depth > MAX_VALUE_DEPTH {
        return Err("value nested too deeply".into());
    }
    match t {
        ParamType::Any => convert_any(v, depth),
        ParamType::Bool => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| "expected a bool".into()),
        ParamType::String => as_str(v).map(|s| Value::String(Arc::new(s.to_owned()))),
        ParamType::Int => to_int(v).map(Value::Int),
        ParamType::Uint => to_uint(v).map(Value::UInt),
        ParamType::Double => v
            .as_f64()
            .map(Value::Float)
            .ok_or_else(|| "expected a number".into()),
        ParamType::Duration => parse_duration(as_str(v)?).map(Value::Duration),
        ParamType::Timestamp => chrono::DateTime::parse_from_rfc3339(as_str(v)?)
            .map(Value::Timestamp)
            .map_err(|e| e.to_string()),
        ParamType::IpAddress => {
            parse_ip(as_str(v)?).map(|ip| Value::Opaque(Arc::new(IpAddress(ip))))
        }
        ParamType::List(inner) => {
            let items = v.as_array().ok_or("expected a list")?;
            let converted: Result<Vec<Value>, String> =
                items.iter().map(|i| convert(i, inner, depth + 1)).collect();
            Ok(Value::List(Arc::new(converted?)))
        }
        ParamType::Map(inner) => {
            let obj = v.as_object().ok_or("expected a map")?;
            let mut map = HashMap::with_capacity(obj.len());
            for (k, item) in obj {
                map.insert(
                    Key::String(Arc::new(k.clone())),
                    convert(item, inner, depth + 1)?,
                );
            }
            Ok(Value::Map(cel::objects::Map { map: Arc::new(map) }))
        }
    }
}

fn convert_any(v: &Json, depth: usize) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(_) => convert(v, &ParamType::List(Box::new(ParamType::Any)), depth)?,
        Json::Object(_) => convert(v, &ParamType::Map(Box::new(ParamType::Any)), depth)?,
    })
}

fn as_str(v: &Json) -> Result<&str, String> {
    v.as_str().ok_or_else(|| "expected a string".into())
}

fn to_int(v: &Json) -> Result<i64, String> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) => {
            format!("{f:.0}").parse::<i64>().map_err(|e| e.to_string())
        }
        _ => Err("expected an integer".into()),
    }
}

fn to_uint(v: &Json) -> Result<u64, String> {
    if let Some(u) = v.as_u64() {
        return Ok(u);
    }
    let i = to_int(v)?;
    u64::try_from(i).map_err(|_| "expected a non-negative integer".into())
}

/// Parse a Go-style duration (`1h30m`, `1.5s`, `300ms`, `-2h`).
pub(crate) fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(chrono::Duration::zero());
    }
    if rest.is_empty() {
        return Err(format!("invalid duration '{s}'"));
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration '{s}'"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total_nanos += value
            * unit_nanos(unit).ok_or_else(|| format!("unknown unit '{unit}' in duration '{s}'"))?;
        rest = next;
    }
    if !total_nanos.is_finite() || total_nanos > 9.2e18 {
        return Err(format!("duration '{s}' out of range"));
    }
    let nanos = format!("{total_nanos:.0}")
        .parse::<i64>()
        .map_err(|e| e.to_string())?;
    let d = chrono::Duration::nanoseconds(nanos);
    Ok(if neg { -d } else { d })
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(params: Vec<(&str, ParamType)>, expr: &str) -> CompiledCondition {
        let def = ConditionDefinition {
            name: "c".into(),
            parameters: params.into_iter().map(|(n, t)| (n.to_owned(), t)).collect(),
            expression: expr.into(),
        };
        CompiledCondition::compile(&def).unwrap()
    }

    fn ctx(v: Json) -> JsonMap<String, Json> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn ip_in_cidr() {
        let c = cond(
            vec![("ip", ParamType::IpAddress)],
            "ip.in_cidr('10.0.0.0/8')",
        );
        assert!(
            c.evaluate(&ctx(serde_json::json!({"ip": "10.1.2.3"})), None)
                .unwrap()
        );
        assert!(
            !c.evaluate(&ctx(serde_json::json!({"ip": "11.1.2.3"})), None)
                .unwrap()
        );
        let e = c.evaluate(&JsonMap::new(), None).unwrap_err();
        assert_eq!(e.code(), 2000);
    }

    #[test]
    fn tuple_context_wins() {
        let c = cond(vec![("x", ParamType::Int)], "x < 100");
        let stored = ctx(serde_json::json!({"x": 1}));
        assert!(
            c.evaluate(&ctx(serde_json::json!({"x": 500})), Some(&stored))
                .unwrap()
        );
    }

    #[test]
    fn timestamps_and_durations() {
        let c = cond(
            vec![
                ("now", ParamType::Timestamp),
                ("start", ParamType::Timestamp),
                ("d", ParamType::Duration),
            ],
            "now < start + d && ipaddress('1.2.3.4').in_cidr('1.2.3.0/24')",
        );
        let v = ctx(
            serde_json::json!({"now": "2024-01-01T00:30:00Z", "start": "2024-01-01T00:00:00Z", "d": "1h"}),
        );
        assert!(c.evaluate(&v, None).unwrap());
    }

    #[test]
    fn cost_budget() {
        let c = cond(
            vec![("l", ParamType::List(Box::new(ParamType::Int)))],
            "l.all(a, l.all(b, l.all(c, a + b + c > 0)))",
        );
        let big: Vec<i64> = (1..300).collect();
        let e = c
            .evaluate(&ctx(serde_json::json!({ "l": big })), None)
            .unwrap_err();
        assert_eq!(e.code(), 2000);
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert_eq!(
            parse_duration("1.5s").unwrap(),
            chrono::Duration::milliseconds(1500)
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
    }
}
