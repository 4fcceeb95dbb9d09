//! The skip log testkit's gates write during `cargo xtask test`, and its one summary line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

/// One skipped case (or variant of a case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub reason: String,
    pub binary: String,
    pub test: String,
    pub detail: String,
}

impl Skipped {
    /// Whether CI must have what was missing: everything but a kernel or filesystem feature
    /// (testkit's `Reason::Lacking`).
    pub fn ci_must_have(&self) -> bool {
        !self.reason.starts_with("kernel/fs lacks")
    }
}

/// The log's skips, each case once (a test may pass the same gate more than once).
pub fn read(log: &Path) -> Result<Vec<Skipped>> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", log.display())),
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.splitn(4, '\t');
        let s = Skipped {
            reason: f.next().unwrap_or_default().to_owned(),
            binary: f.next().unwrap_or_default().to_owned(),
            test: f.next().unwrap_or_default().to_owned(),
            detail: f.next().unwrap_or_default().to_owned(),
        };
        if seen.insert((s.reason.clone(), s.binary.clone(), s.test.clone())) {
            out.push(s);
        }
    }
    out.sort();
    Ok(out)
}

/// `xtask: skipped N test cases (A not root, B no overlayfs, ...); list: <log>`.
pub fn summary(skips: &[Skipped], log: &Path) -> String {
    if skips.is_empty() {
        return "xtask: skipped 0 test cases".to_owned();
    }
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for s in skips {
        *by.entry(s.reason.as_str()).or_default() += 1;
    }
    let mut groups: Vec<(&str, usize)> = by.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = groups.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!(
        "xtask: skipped {} test cases ({}); list: {}",
        skips.len(),
        parts.join(", "),
        log.display()
    )
}
