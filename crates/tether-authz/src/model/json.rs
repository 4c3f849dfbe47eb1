//! OpenFGA JSON model format: parse and emit.

use serde_json::{Map, Value, json};

use super::types::{
    ConditionDefinition, ModelData, ModuleSource, ModuleSources, ParamType, RelationDefinition,
    TypeDefinition, TypeRestriction, Userset,
};
use crate::error::{AuthzError, ModelError, ModelErrorKind};

type JsonResult<T> = Result<T, AuthzError>;

fn syntax(msg: impl Into<String>) -> AuthzError {
    AuthzError::model(ModelErrorKind::Syntax, msg)
}

/// Parse an OpenFGA JSON model (the `WriteAuthorizationModel` body or a stored model).
pub fn parse_json_model(text: &str) -> JsonResult<ModelData> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| syntax(format!("invalid JSON model: {e}")))?;
    model_from_value(&value)
}

/// Parse from an already decoded JSON value.
pub fn model_from_value(value: &Value) -> JsonResult<ModelData> {
    let obj = value
        .as_object()
        .ok_or_else(|| syntax("the model must be a JSON object"))?;
    let schema_version = match obj.get("schema_version") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(syntax("schema_version must be a string")),
    };
    let types: Vec<TypeDefinition> = match obj.get("type_definitions") {
        Some(Value::Array(items)) => items
            .iter()
            .map(type_from_value)
            .collect::<JsonResult<_>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(syntax("type_definitions must be an array")),
    };
    let sources = sources_from_value(value);
    let mut conditions = std::collections::BTreeMap::new();
    if let Some(c) = obj.get("conditions").filter(|v| !v.is_null()) {
        let map = c
            .as_object()
            .ok_or_else(|| syntax("conditions must be an object"))?;
        for (key, v) in map {
            let cond = condition_from_value(key, v)?;
            conditions.insert(key.clone(), cond);
        }
    }
    Ok(ModelData {
        schema_version,
        types,
        conditions,
        sources,
    })
}

fn source(meta: Option<&Value>) -> Option<ModuleSource> {
    module_of(meta).map(|(file, module)| ModuleSource {
        module: module.to_owned(),
        file: file.to_owned(),
    })
}

/// The `module` and `source_info` metadata of types, relations and conditions.
fn sources_from_value(value: &Value) -> ModuleSources {
    let mut out = ModuleSources::default();
    let types = value.get("type_definitions").and_then(Value::as_array);
    for t in types.into_iter().flatten() {
        let Some(name) = t.get("type").and_then(Value::as_str) else {
            continue;
        };
        let meta = t.get("metadata");
        if let Some(src) = source(meta) {
            out.types.insert(name.to_owned(), src);
        }
        let rels = meta
            .and_then(|m| m.get("relations"))
            .and_then(Value::as_object);
        for (rel, m) in rels.into_iter().flatten() {
            if let Some(src) = source(Some(m)) {
                out.relations.insert((name.to_owned(), rel.clone()), src);
            }
        }
    }
    let conds = value.get("conditions").and_then(Value::as_object);
    for (name, c) in conds.into_iter().flatten() {
        if let Some(src) = source(c.get("metadata")) {
            out.conditions.insert(name.clone(), src);
        }
    }
    out
}

fn source_value(src: &ModuleSource) -> (Value, Value) {
    (json!(src.module), json!({ "file": src.file }))
}

/// Where a type, relation or condition says it comes from: (file, module).
fn module_of(meta: Option<&Value>) -> Option<(&str, &str)> {
    let meta = meta?;
    let module = meta.get("module")?.as_str().filter(|m| !m.is_empty())?;
    let file = meta
        .get("source_info")?
        .get("file")?
        .as_str()
        .filter(|f| !f.is_empty())?;
    Some((file, module))
}

/// OpenFGA's check that a JSON model maps back to module files: each file
/// may hold one module only.
pub(crate) fn module_file_errors(value: &Value) -> Vec<ModelError> {
    let mut files: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut sources: Vec<(&str, &str)> = Vec::new();
    let types = value.get("type_definitions").and_then(Value::as_array);
    for t in types.into_iter().flatten() {
        let meta = t.get("metadata");
        sources.extend(module_of(meta));
        let rels = meta
            .and_then(|m| m.get("relations"))
            .and_then(Value::as_object);
        for r in rels.into_iter().flat_map(|m| m.values()) {
            sources.extend(module_of(Some(r)));
        }
    }
    let conds = value.get("conditions").and_then(Value::as_object);
    for c in conds.into_iter().flat_map(|m| m.values()) {
        sources.extend(module_of(c.get("metadata")));
    }
    for (file, module) in sources {
        match files.iter_mut().find(|(f, _)| *f == file) {
            Some((_, mods)) if !mods.contains(&module) => mods.push(module),
            Some(_) => {}
            None => files.push((file, vec![module])),
        }
    }
    files
        .into_iter()
        .filter(|(_, mods)| mods.len() > 1)
        .map(|(file, mods)| ModelError {
            message: format!(
                "file {file} would contain multiple module definitions ({}) when transforming to DSL. Only one module can be defined per file.",
                mods.join(", ")
            ),
            kind: ModelErrorKind::MultipleModulesInFile,
            symbol: Some(file.to_owned()),
            span: None,
        })
        .collect()
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> JsonResult<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| syntax(format!("missing string field '{key}'")))
}

fn type_from_value(value: &Value) -> JsonResult<TypeDefinition> {
    let obj = value
        .as_object()
        .ok_or_else(|| syntax("a type definition must be an object"))?;
    let name = str_field(obj, "type")?.to_owned();
    let meta = obj
        .get("metadata")
        .and_then(|m| m.get("relations"))
        .and_then(Value::as_object);
    let mut relations = Vec::new();
    if let Some(rels) = obj.get("relations").filter(|v| !v.is_null()) {
        let rels = rels
            .as_object()
            .ok_or_else(|| syntax("relations must be an object"))?;
        for (rel_name, rewrite) in rels {
            let directly_related = match meta.and_then(|m| m.get(rel_name)) {
                Some(m) => restrictions_from_value(m)?,
                None => Vec::new(),
            };
            relations.push(RelationDefinition {
                name: rel_name.clone(),
                rewrite: userset_from_value(rewrite)?,
                directly_related,
            });
        }
    }
    Ok(TypeDefinition { name, relations })
}

fn restrictions_from_value(meta: &Value) -> JsonResult<Vec<TypeRestriction>> {
    let Some(items) = meta.get("directly_related_user_types") else {
        return Ok(Vec::new());
    };
    let Some(items) = items.as_array() else {
        return Ok(Vec::new());
    };
    items.iter().map(restriction_from_value).collect()
}

fn restriction_from_value(value: &Value) -> JsonResult<TypeRestriction> {
    let obj = value
        .as_object()
        .ok_or_else(|| syntax("a related user type must be an object"))?;
    let type_name = str_field(obj, "type")?.to_owned();
    let relation = obj
        .get("relation")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let wildcard = obj.get("wildcard").is_some_and(|w| !w.is_null());
    let condition = obj
        .get("condition")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(TypeRestriction {
        type_name,
        relation,
        wildcard,
        condition,
    })
}

fn relation_of(value: &Value, what: &str) -> JsonResult<String> {
    value
        .get("relation")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| syntax(format!("{what} needs a 'relation'")))
}

fn children(value: &Value) -> JsonResult<Vec<Userset>> {
    let items = value
        .get("child")
        .and_then(Value::as_array)
        .ok_or_else(|| syntax("union and intersection need a 'child' array"))?;
    items.iter().map(userset_from_value).collect()
}

fn userset_from_value(value: &Value) -> JsonResult<Userset> {
    let obj = value
        .as_object()
        .ok_or_else(|| syntax("a relation rewrite must be an object"))?;
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    if present("this").is_some() {
        return Ok(Userset::This);
    }
    if let Some(cu) = present("computedUserset") {
        return Ok(Userset::Computed(relation_of(cu, "computedUserset")?));
    }
    if let Some(ttu) = present("tupleToUserset") {
        let ts = ttu.get("tupleset").unwrap_or(&Value::Null);
        let cu = ttu.get("computedUserset").unwrap_or(&Value::Null);
        return Ok(Userset::TupleToUserset {
            tupleset: relation_of(ts, "tupleset")?,
            computed: relation_of(cu, "computedUserset")?,
        });
    }
    if let Some(u) = present("union") {
        return Ok(Userset::Union(children(u)?));
    }
    if let Some(i) = present("intersection") {
        return Ok(Userset::Intersection(children(i)?));
    }
    if let Some(d) = present("difference") {
        let base = d
            .get("base")
            .ok_or_else(|| syntax("difference needs 'base'"))?;
        let sub = d
            .get("subtract")
            .ok_or_else(|| syntax("difference needs 'subtract'"))?;
        return Ok(Userset::Difference {
            base: Box::new(userset_from_value(base)?),
            subtract: Box::new(userset_from_value(sub)?),
        });
    }
    Err(syntax(
        "a relation rewrite needs one of this, computedUserset, tupleToUserset, union, intersection, difference",
    ))
}

fn condition_from_value(key: &str, value: &Value) -> JsonResult<ConditionDefinition> {
    let obj = value
        .as_object()
        .ok_or_else(|| syntax("a condition must be an object"))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(key)
        .to_owned();
    let expression = str_field(obj, "expression")?.to_owned();
    let mut parameters = Vec::new();
    if let Some(params) = obj.get("parameters").and_then(Value::as_object) {
        for (pname, ptype) in params {
            parameters.push((pname.clone(), param_type_from_value(ptype, 0)?));
        }
    }
    Ok(ConditionDefinition {
        name,
        parameters,
        expression,
    })
}

fn param_type_from_value(value: &Value, depth: usize) -> JsonResult<ParamType> {
    if depth > 16 {
        return Err(syntax("condition parameter type nested too deeply"));
    }
    let type_name = value
        .get("type_name")
        .and_then(Value::as_str)
        .ok_or_else(|| syntax("a condition parameter needs 'type_name'"))?;
    let generic = || -> JsonResult<ParamType> {
        let first = value
            .get("generic_types")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .ok_or_else(|| syntax(format!("{type_name} needs one generic type")))?;
        param_type_from_value(first, depth + 1)
    };
    let scalar = type_name
        .strip_prefix("TYPE_NAME_")
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match scalar.as_str() {
        "list" => Ok(ParamType::List(Box::new(generic()?))),
        "map" => Ok(ParamType::Map(Box::new(generic()?))),
        other => ParamType::from_scalar_name(other)
            .ok_or_else(|| syntax(format!("unknown condition parameter type '{type_name}'"))),
    }
}

// ---------------------------------------------------------------------------------------
// Emit

/// Emit the OpenFGA JSON form of a model.
pub fn model_to_value(model: &ModelData) -> Value {
    let mut out = Map::new();
    out.insert("schema_version".into(), json!(model.schema_version));
    if !model.types.is_empty() {
        let types: Vec<Value> = model
            .types
            .iter()
            .map(|t| type_to_value(t, &model.sources))
            .collect();
        out.insert("type_definitions".into(), Value::Array(types));
    }
    if !model.conditions.is_empty() {
        let conds: Map<String, Value> = model
            .conditions
            .iter()
            .map(|(k, c)| {
                let src = model.sources.conditions.get(k);
                (k.clone(), condition_to_value(c, src))
            })
            .collect();
        out.insert("conditions".into(), Value::Object(conds));
    }
    Value::Object(out)
}

fn type_to_value(t: &TypeDefinition, sources: &ModuleSources) -> Value {
    let relations: Map<String, Value> = t
        .relations
        .iter()
        .map(|r| (r.name.clone(), userset_to_value(&r.rewrite)))
        .collect();
    let mut metadata = Map::new();
    if let Some(src) = sources.types.get(&t.name) {
        let (module, info) = source_value(src);
        metadata.insert("module".into(), module);
        metadata.insert("source_info".into(), info);
    }
    if !t.relations.is_empty() {
        let meta: Map<String, Value> = t
            .relations
            .iter()
            .map(|r| {
                let types: Vec<Value> = r
                    .directly_related
                    .iter()
                    .map(restriction_to_value)
                    .collect();
                let mut m = Map::new();
                m.insert("directly_related_user_types".into(), Value::Array(types));
                let key = (t.name.clone(), r.name.clone());
                if let Some(src) = sources.relations.get(&key) {
                    let (module, info) = source_value(src);
                    m.insert("module".into(), module);
                    m.insert("source_info".into(), info);
                }
                (r.name.clone(), Value::Object(m))
            })
            .collect();
        metadata.insert("relations".into(), Value::Object(meta));
    }
    let metadata = if metadata.is_empty() {
        Value::Null
    } else {
        Value::Object(metadata)
    };
    json!({ "type": t.name, "relations": relations, "metadata": metadata })
}

fn restriction_to_value(r: &TypeRestriction) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(r.type_name));
    if let Some(rel) = &r.relation {
        m.insert("relation".into(), json!(rel));
    }
    if r.wildcard {
        m.insert("wildcard".into(), json!({}));
    }
    if let Some(c) = &r.condition {
        m.insert("condition".into(), json!(c));
    }
    Value::Object(m)
}

fn userset_to_value(u: &Userset) -> Value {
    match u {
        Userset::This => json!({ "this": {} }),
        Userset::Computed(r) => json!({ "computedUserset": { "relation": r } }),
        Userset::TupleToUserset { tupleset, computed } => json!({
            "tupleToUserset": {
                "tupleset": { "relation": tupleset },
                "computedUserset": { "relation": computed }
            }
        }),
        Userset::Union(c) => {
            json!({ "union": { "child": c.iter().map(userset_to_value).collect::<Vec<_>>() } })
        }
        Userset::Intersection(c) => {
            json!({ "intersection": { "child": c.iter().map(userset_to_value).collect::<Vec<_>>() } })
        }
        Userset::Difference { base, subtract } => json!({
            "difference": { "base": userset_to_value(base), "subtract": userset_to_value(subtract) }
        }),
    }
}

fn condition_to_value(c: &ConditionDefinition, src: Option<&ModuleSource>) -> Value {
    let mut v = condition_body(c);
    if let (Some(src), Some(obj)) = (src, v.as_object_mut()) {
        let (module, info) = source_value(src);
        obj.insert(
            "metadata".into(),
            json!({ "module": module, "source_info": info }),
        );
    }
    v
}

fn condition_body(c: &ConditionDefinition) -> Value {
    let params: Map<String, Value> = c
        .parameters
        .iter()
        .map(|(n, t)| (n.clone(), param_type_to_value(t)))
        .collect();
    json!({ "name": c.name, "expression": c.expression, "parameters": params })
}

fn param_type_to_value(t: &ParamType) -> Value {
    match t {
        ParamType::List(inner) | ParamType::Map(inner) => json!({
            "type_name": t.json_type_name(),
            "generic_types": [param_type_to_value(inner)]
        }),
        other => json!({ "type_name": other.json_type_name() }),
    }
}
