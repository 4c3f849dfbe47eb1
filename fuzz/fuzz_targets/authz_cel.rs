#![no_main]
//! Condition compilation and bounded evaluation: no panic, no hang.
use libfuzzer_sys::fuzz_target;
use tether_authz::condition::CompiledCondition;
use tether_authz::model::{ConditionDefinition, ParamType};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let (expr, ctx) = src.split_once('\u{0}').unwrap_or((src, "{}"));
    let def = ConditionDefinition {
        name: "c".into(),
        parameters: vec![
            ("x".into(), ParamType::Int),
            ("s".into(), ParamType::String),
            ("ip".into(), ParamType::IpAddress),
            ("l".into(), ParamType::List(Box::new(ParamType::Any))),
            ("t".into(), ParamType::Timestamp),
            ("d".into(), ParamType::Duration),
        ],
        expression: expr.into(),
    };
    let Ok(cond) = CompiledCondition::compile(&def) else { return };
    let context = serde_json::from_str::<serde_json::Value>(ctx)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let _ = cond.evaluate(&context, None);
});
