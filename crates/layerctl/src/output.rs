//! What commands print: JSON shapes (a stable interface for scripts) and aligned tables.

use std::collections::BTreeMap;
use std::io::{self, Write};

use layer_store::{Layer, RwLayer};
use serde::Serialize;

/// One layer, as `ls --json` prints it.
#[derive(Debug, Serialize)]
pub struct LayerJson {
    pub chain_id: String,
    pub diff_id: String,
    /// `null` for a base layer.
    pub parent: Option<String>,
    /// The whole chain's size.
    pub size: u64,
    /// This layer's own size.
    pub diff_size: u64,
    pub cache_id: String,
}

impl From<&Layer> for LayerJson {
    fn from(l: &Layer) -> Self {
        LayerJson {
            chain_id: l.chain_id().to_string(),
            diff_id: l.diff_id().to_string(),
            parent: l.parent().map(|p| p.chain_id().to_string()),
            size: l.size(),
            diff_size: l.diff_size(),
            cache_id: l.cache_id().to_owned(),
        }
    }
}

/// One layer, as `inspect` prints it: the `ls` keys plus the driver's metadata.
#[derive(Debug, Serialize)]
pub struct InspectJson {
    #[serde(flatten)]
    pub layer: LayerJson,
    pub metadata: BTreeMap<String, String>,
}

/// One RW layer, as `rw ls --json` prints it.
#[derive(Debug, Serialize)]
pub struct RwJson {
    pub name: String,
    pub mount_id: String,
    pub init_id: Option<String>,
    pub parent: Option<String>,
}

impl From<&RwLayer> for RwJson {
    fn from(m: &RwLayer) -> Self {
        RwJson {
            name: m.name().to_owned(),
            mount_id: m.mount_id().to_owned(),
            init_id: m.init_id().map(str::to_owned),
            parent: m.parent().map(|p| p.chain_id().to_string()),
        }
    }
}

/// One layer a removal deleted, as `rm --json` prints it.
#[derive(Debug, Serialize)]
pub struct RemovedJson {
    pub chain_id: String,
    pub diff_id: String,
    pub size: u64,
    pub diff_size: u64,
}

impl From<&layer_store::Metadata> for RemovedJson {
    fn from(m: &layer_store::Metadata) -> Self {
        RemovedJson {
            chain_id: m.chain_id.to_string(),
            diff_id: m.diff_id.to_string(),
            size: m.size,
            diff_size: m.diff_size,
        }
    }
}

/// One change, as `rw changes --json` prints it.
#[derive(Debug, Serialize)]
pub struct ChangeJson {
    /// `A`, `C` or `D`.
    pub kind: String,
    pub path: String,
}

/// Prints `value` as pretty JSON and a newline on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints rows under headers, columns padded to the widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    let line = |out: &mut dyn Write, cells: Vec<&str>| -> io::Result<()> {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    if headers.iter().any(|h| !h.is_empty()) {
        line(&mut out, headers.to_vec())?;
    }
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// A digest shortened for tables: `sha256:` and 12 hex digits (full with `--no-trunc`).
pub fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        return id.to_owned();
    }
    match id.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => id[..id.len().min(12)].to_owned(),
    }
}

/// Bytes for humans: `1.2 MB` (decimal units, as docker prints sizes).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.3} {}", UNITS[unit])
            .replace(".000 ", " ")
            .to_string()
    }
}

/// Prints one line per row through a `--format` template, as docker's and podman's
/// `--format`: `{{.Field}}` is a field of the row (names as in `--json`, case and `_`
/// ignored: `{{.ChainID}}` is `chain_id`), `{{json .}}` the whole row as JSON, `{{json
/// .Field}}` one field as JSON; `\t` and `\n` are a tab and a newline. `json` alone prints
/// each row as one line of JSON; `table TEMPLATE` adds a header line and aligns the
/// tab-separated columns. A field that does not exist is an error naming the fields that do.
pub fn format_rows(template: &str, rows: &[serde_json::Value]) -> anyhow::Result<()> {
    if template.trim() == "json" {
        let mut out = io::stdout().lock();
        for row in rows {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let (as_table, template) = match template.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            (true, rest.trim_start())
        }
        _ => (false, template),
    };
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let parts = parse_template(&template)?;
    let fields: Vec<String> = match rows.first() {
        Some(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    // Checked once, even with no rows to print: a typo is an error, not empty output.
    for part in &parts {
        if let Part::Field {
            name: Some(name), ..
        } = part
            && !fields.is_empty()
            && !fields.iter().any(|f| same_field(f, name))
        {
            anyhow::bail!(
                "--format: no field {name:?}; the fields are: {}",
                fields.join(", ")
            );
        }
    }
    let rendered: Vec<String> = rows
        .iter()
        .map(|row| render(&parts, row))
        .collect::<anyhow::Result<_>>()?;
    if as_table {
        let header: String = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field { name: Some(n), .. } => n.to_uppercase(),
                Part::Field { name: None, .. } => "JSON".into(),
            })
            .collect();
        let headers: Vec<&str> = header.split('\t').collect();
        let cells: Vec<Vec<String>> = rendered
            .iter()
            .map(|r| r.split('\t').map(str::to_owned).collect())
            .collect();
        return Ok(table(&headers, &cells)?);
    }
    let mut out = io::stdout().lock();
    for line in rendered {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

enum Part {
    Text(String),
    /// `{{.Name}}` or `{{json .Name}}`; `name` is `None` for `.` (the whole row).
    Field {
        name: Option<String>,
        json: bool,
    },
}

fn parse_template(template: &str) -> anyhow::Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow::anyhow!("--format: unclosed {{{{ in the template"))?;
        let action = after[..end].trim();
        let (json, expr) = match action.strip_prefix("json") {
            Some(e) if e.starts_with(char::is_whitespace) => (true, e.trim()),
            _ => (false, action),
        };
        let name = match expr {
            "." => None,
            e if e.starts_with('.') && e.len() > 1 && !e[1..].contains(['.', ' ']) => {
                Some(e[1..].to_owned())
            }
            _ => anyhow::bail!(
                "--format: {{{{{action}}}}} is not supported (use {{{{.Field}}}}, {{{{json .}}}} or {{{{json .Field}}}})"
            ),
        };
        parts.push(Part::Field { name, json });
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn same_field(key: &str, name: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .flat_map(char::to_lowercase)
            .collect()
    };
    norm(key) == norm(name)
}

fn render(parts: &[Part], row: &serde_json::Value) -> anyhow::Result<String> {
    let mut line = String::new();
    for part in parts {
        match part {
            Part::Text(t) => line.push_str(t),
            Part::Field { name, json } => {
                let value = match name {
                    None => row,
                    Some(n) => row
                        .as_object()
                        .and_then(|m| m.iter().find(|(k, _)| same_field(k, n)))
                        .map(|(_, v)| v)
                        .ok_or_else(|| anyhow::anyhow!("--format: no field {n:?}"))?,
                };
                if *json {
                    line.push_str(&serde_json::to_string(value)?);
                } else {
                    line.push_str(&plain(value));
                }
            }
        }
    }
    Ok(line)
}

/// A value as text: strings bare, `null` empty, lists comma-separated.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}
