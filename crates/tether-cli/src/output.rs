//! Output formats: table, JSON, YAML.

use anyhow::Result;
use clap::ValueEnum;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

/// `-o` formats.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints a value in a format; `table` uses `columns` (title, JSON pointer).
pub fn print(value: &Value, format: Format, columns: &[(&str, &str)]) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print_yaml(value)?,
        Format::Table => print_table(value, columns),
    }
    Ok(())
}

fn print_yaml(value: &Value) -> Result<()> {
    match value {
        Value::Array(items) => {
            for item in items {
                println!("---");
                print!("{}", serde_saphyr::to_string(item)?);
            }
        }
        v => print!("{}", serde_saphyr::to_string(v)?),
    }
    Ok(())
}

fn cell(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn print_table(value: &Value, columns: &[(&str, &str)]) {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut table = Table::new();
    table.load_style(UTF8_BORDERS_ONLY);
    table.set_header(columns.iter().map(|(t, _)| *t));
    for row in rows {
        table.add_row(columns.iter().map(|(_, p)| cell(row, p)));
    }
    println!("{table}");
}

/// The columns used for resources.
pub const RESOURCE_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/metadata/name"),
    ("KIND", "/kind"),
    ("ENV", "/metadata/env"),
    ("ID", "/metadata/id"),
    ("UPDATED", "/status/audit/updated_at"),
    ("BY", "/status/audit/updated_by"),
];
