//! Plain data types of an authorization model (schema 1.1).

use std::collections::BTreeMap;

/// A relation rewrite (the right-hand side of `define x: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Userset {
    /// Direct assignment (`[user, group#member]`): the `this` rewrite.
    This,
    /// Another relation on the same object.
    Computed(String),
    /// `computed from tupleset`.
    TupleToUserset {
        /// The relation on this object that points at parent objects.
        tupleset: String,
        /// The relation evaluated on each parent.
        computed: String,
    },
    /// `a or b or ...`.
    Union(Vec<Userset>),
    /// `a and b and ...`.
    Intersection(Vec<Userset>),
    /// `base but not subtract`.
    Difference {
        /// The base set.
        base: Box<Userset>,
        /// The set removed from the base.
        subtract: Box<Userset>,
    },
}

impl Userset {
    /// Whether `This` occurs anywhere in the rewrite.
    pub fn contains_this(&self) -> bool {
        match self {
            Self::This => true,
            Self::Computed(_) | Self::TupleToUserset { .. } => false,
            Self::Union(c) | Self::Intersection(c) => c.iter().any(Self::contains_this),
            Self::Difference { base, subtract } => base.contains_this() || subtract.contains_this(),
        }
    }
}

/// One allowed user type of a directly assignable relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeRestriction {
    /// The user's type.
    pub type_name: String,
    /// `Some(r)` for `type#r` usersets.
    pub relation: Option<String>,
    /// `true` for `type:*`.
    pub wildcard: bool,
    /// `Some(c)` for `... with c`.
    pub condition: Option<String>,
}

impl TypeRestriction {
    /// A plain `type` restriction.
    pub fn direct(type_name: &str) -> Self {
        Self {
            type_name: type_name.to_owned(),
            relation: None,
            wildcard: false,
            condition: None,
        }
    }

    /// DSL form without the condition (`user`, `user:*`, `group#member`).
    pub fn dsl_subject(&self) -> String {
        match (&self.relation, self.wildcard) {
            (Some(r), _) => format!("{}#{}", self.type_name, r),
            (None, true) => format!("{}:*", self.type_name),
            (None, false) => self.type_name.clone(),
        }
    }
}

/// A relation of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationDefinition {
    /// Relation name.
    pub name: String,
    /// Rewrite.
    pub rewrite: Userset,
    /// Directly related user types (metadata); empty when the rewrite has no `This`.
    pub directly_related: Vec<TypeRestriction>,
}

/// A type definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDefinition {
    /// Type name.
    pub name: String,
    /// Relations, in definition order.
    pub relations: Vec<RelationDefinition>,
}

impl TypeDefinition {
    /// Look up a relation by name.
    pub fn relation(&self, name: &str) -> Option<&RelationDefinition> {
        self.relations.iter().find(|r| r.name == name)
    }
}

/// A condition parameter type (`TYPE_NAME_*`, with generics for `list<T>` / `map<T>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    /// `any`
    Any,
    /// `bool`
    Bool,
    /// `string`
    String,
    /// `int`
    Int,
    /// `uint`
    Uint,
    /// `double`
    Double,
    /// `duration`
    Duration,
    /// `timestamp`
    Timestamp,
    /// `ipaddress`
    IpAddress,
    /// `list<T>`
    List(Box<ParamType>),
    /// `map<T>` (keys are strings)
    Map(Box<ParamType>),
}

impl ParamType {
    /// DSL spelling (`list<string>`).
    pub fn dsl_name(&self) -> String {
        match self {
            Self::List(t) => format!("list<{}>", t.dsl_name()),
            Self::Map(t) => format!("map<{}>", t.dsl_name()),
            other => other.scalar_name().to_owned(),
        }
    }

    fn scalar_name(&self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Int => "int",
            Self::Uint => "uint",
            Self::Double => "double",
            Self::Duration => "duration",
            Self::Timestamp => "timestamp",
            Self::IpAddress => "ipaddress",
            Self::List(_) => "list",
            Self::Map(_) => "map",
        }
    }

    /// Parse a scalar DSL type name (`int`, ...); generics are handled by the caller.
    pub fn from_scalar_name(name: &str) -> Option<Self> {
        Some(match name {
            "any" => Self::Any,
            "bool" => Self::Bool,
            "string" => Self::String,
            "int" => Self::Int,
            "uint" => Self::Uint,
            "double" => Self::Double,
            "duration" => Self::Duration,
            "timestamp" => Self::Timestamp,
            "ipaddress" => Self::IpAddress,
            _ => return None,
        })
    }

    /// JSON `TYPE_NAME_*` spelling of the outer type.
    pub fn json_type_name(&self) -> String {
        format!("TYPE_NAME_{}", self.scalar_name().to_ascii_uppercase())
    }
}

/// A named condition: typed parameters and a CEL expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionDefinition {
    /// Condition name.
    pub name: String,
    /// Parameters, in definition order.
    pub parameters: Vec<(String, ParamType)>,
    /// CEL source.
    pub expression: String,
}

/// Where a definition of a modular model (schema 1.2) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    /// Module name (`module x` in the file).
    pub module: String,
    /// File name, as listed in `fga.mod`.
    pub file: String,
}

/// The module and file of each definition of a modular model. Relations are
/// listed only when they come from an `extend type` in another module.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleSources {
    /// Type name to its source.
    pub types: BTreeMap<String, ModuleSource>,
    /// (type, relation) to the source of an extension.
    pub relations: BTreeMap<(String, String), ModuleSource>,
    /// Condition name to its source.
    pub conditions: BTreeMap<String, ModuleSource>,
}

/// The raw, unvalidated content of a model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelData {
    /// `schema_version`, e.g. `1.1`.
    pub schema_version: String,
    /// Types, in definition order.
    pub types: Vec<TypeDefinition>,
    /// Conditions by name.
    pub conditions: BTreeMap<String, ConditionDefinition>,
    /// Module sources (schema 1.2 models combined from module files).
    pub sources: ModuleSources,
}

impl ModelData {
    /// The modules the model is made of, sorted (OpenFGA's `getModulesFromJSON`).
    pub fn module_names(&self) -> Vec<String> {
        let s = &self.sources;
        let all = s.types.values().chain(s.relations.values());
        let names: std::collections::BTreeSet<&str> = all
            .chain(s.conditions.values())
            .map(|m| m.module.as_str())
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Look up a type by name.
    pub fn type_def(&self, name: &str) -> Option<&TypeDefinition> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Look up a relation on a type.
    pub fn relation(&self, type_name: &str, relation: &str) -> Option<&RelationDefinition> {
        self.type_def(type_name).and_then(|t| t.relation(relation))
    }
}
