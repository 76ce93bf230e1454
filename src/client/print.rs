//! How the client prints: tables for lists, records for one item, JSON with `--json`.

use serde_json::Value;

use crate::cli::Output;

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows under headers, columns aligned.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row));
    }
}

/// Prints one resource as `field  value` lines.
pub(super) fn record(value: &Value, fields: &[&str]) {
    let rows = fields
        .iter()
        .map(|f| vec![f.to_string(), text(&value[*f])])
        .collect();
    table(&["FIELD", "VALUE"], rows);
}

pub(super) fn print_list(out: Output, items: Vec<Value>, columns: &[(&str, &str)]) {
    if out.json {
        println!("{}", Value::Array(items));
        return;
    }
    let rows = items
        .iter()
        .map(|i| columns.iter().map(|(_, f)| text(&i[*f])).collect())
        .collect();
    table(&columns.iter().map(|(h, _)| *h).collect::<Vec<_>>(), rows);
}

pub(super) fn print_one(out: Output, value: &Value, fields: &[&str]) {
    if out.json {
        println!("{value}");
    } else {
        record(value, fields);
    }
}

pub(super) const PROJECT_FIELDS: [&str; 5] =
    ["id", "name", "description", "language", "created_at"];
pub(super) const AGENT_FIELDS: [&str; 6] =
    ["id", "name", "provider", "model", "tools", "created_at"];
pub(super) const RUN_FIELDS: [&str; 8] = [
    "id",
    "agent_id",
    "status",
    "approval_expires_at",
    "goal",
    "output",
    "error",
    "finished_at",
];
