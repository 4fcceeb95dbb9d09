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
