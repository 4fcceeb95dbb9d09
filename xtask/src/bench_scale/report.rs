//! What a scale run writes: the raw samples (JSON), a markdown table with the machine, and
//! one SVG chart per axis (time and peak RSS against size, log-log, ours beside each peer).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::Axis;

/// The implementations, in column order.
pub const IMPS: [&str; 3] = ["ours", "moby", "tar"];

/// One measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    pub axis: Axis,
    pub size: u64,
    pub step: String,
    pub imp: &'static str,
    pub secs: f64,
    pub rss_kb: u64,
    pub ok: bool,
    /// Why it failed, or extra facts (throughput, errors).
    pub note: String,
}

/// Medians of one (axis, size, step, implementation).
#[derive(Debug, Clone)]
pub struct Cell {
    pub secs: Option<f64>,
    pub rss_mib: Option<f64>,
    pub runs: usize,
    pub failures: usize,
    pub note: String,
}

#[derive(Debug, Default)]
pub struct Results {
    pub samples: Vec<Sample>,
}

type Key = (u64, String, &'static str);

impl Results {
    pub fn add(&mut self, s: Sample) {
        let state = if s.ok { "" } else { " FAILED" };
        eprintln!(
            "xtask: scale {:<11} {:>10} {:<34} {:<4} {:>9.4} s {:>7.1} MiB{state} {}",
            s.axis.name(),
            s.size,
            s.step,
            s.imp,
            s.secs,
            s.rss_kb as f64 / 1024.0,
            s.note
        );
        self.samples.push(s);
    }

    /// Our failures, one line each.
    pub fn our_failures(&self) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.imp == "ours" && !s.ok)
            .map(|s| format!("{} {} {}: {}", s.axis.name(), s.size, s.step, s.note))
            .collect()
    }

    /// Cells of one axis, and its steps in first-seen order.
    fn cells(&self, axis: Axis) -> (BTreeMap<Key, Cell>, Vec<String>) {
        let mut groups: BTreeMap<Key, Vec<&Sample>> = BTreeMap::new();
        let mut steps: Vec<String> = Vec::new();
        for s in self.samples.iter().filter(|s| s.axis == axis) {
            if !steps.contains(&s.step) {
                steps.push(s.step.clone());
            }
            groups
                .entry((s.size, s.step.clone(), s.imp))
                .or_default()
                .push(s);
        }
        let cells = groups
            .into_iter()
            .map(|(k, v)| {
                let mut ok: Vec<f64> = v.iter().filter(|s| s.ok).map(|s| s.secs).collect();
                ok.sort_by(f64::total_cmp);
                // The median; of an even count, the mean of the middle two.
                let secs = match ok.len() {
                    0 => None,
                    n if n % 2 == 1 => Some(ok[n / 2]),
                    n => Some((ok[n / 2 - 1] + ok[n / 2]) / 2.0),
                };
                let rss = v
                    .iter()
                    .filter(|s| s.ok)
                    .map(|s| s.rss_kb)
                    .max()
                    .map(|k| k as f64 / 1024.0);
                let failures = v.iter().filter(|s| !s.ok).count();
                let note = v
                    .iter()
                    .rev()
                    .find(|s| !s.note.is_empty())
                    .map(|s| s.note.clone())
                    .unwrap_or_default();
                (
                    k,
                    Cell {
                        secs,
                        rss_mib: rss,
                        runs: v.len(),
                        failures,
                        note,
                    },
                )
            })
            .collect();
        (cells, steps)
    }

    /// Samples saved by [`Results::to_json`] (for `--from`, which redraws merged runs).
    pub fn add_json(&mut self, samples: &serde_json::Value) -> Result<()> {
        for v in samples
            .as_array()
            .ok_or_else(|| anyhow!("samples: not an array"))?
        {
            let text = |k: &str| v[k].as_str().ok_or_else(|| anyhow!("sample without {k}"));
            let name = text("impl")?;
            let imp = IMPS
                .into_iter()
                .find(|i| *i == name)
                .ok_or_else(|| anyhow!("unknown implementation in {v}"))?;
            self.samples.push(Sample {
                axis: Axis::parse(text("axis")?)?,
                size: v["size"].as_u64().unwrap_or(0),
                step: text("step")?.to_owned(),
                imp,
                secs: v["secs"].as_f64().unwrap_or(0.0),
                rss_kb: v["rss_kib"].as_u64().unwrap_or(0),
                ok: v["ok"].as_bool().unwrap_or(false),
                note: text("note").unwrap_or("").to_owned(),
            });
        }
        Ok(())
    }

    /// The axes that have samples, in order.
    pub fn axes(&self) -> Vec<Axis> {
        let mut axes: Vec<Axis> = self.samples.iter().map(|s| s.axis).collect();
        axes.sort();
        axes.dedup();
        axes
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.samples
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "axis": s.axis.name(), "size": s.size, "step": s.step, "impl": s.imp,
                        "secs": s.secs, "rss_kib": s.rss_kb, "ok": s.ok, "note": s.note,
                    })
                })
                .collect(),
        )
    }

    /// The markdown tables, one per axis.
    pub fn markdown(&self, axes: &[Axis]) -> String {
        let mut md = String::new();
        for &axis in axes {
            let (cells, steps) = self.cells(axis);
            if cells.is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {} ({})\n", axis.title(), axis.unit());
            let _ = writeln!(
                md,
                "| {} | step | ours s | moby s | GNU tar s | ours ÷ moby | ours ÷ tar | ours MiB | moby MiB | tar MiB | ours growth | notes |",
                axis.unit()
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            let mut sizes: Vec<u64> = cells.keys().map(|k| k.0).collect();
            sizes.dedup();
            for step in &steps {
                let mut prev: Option<(u64, f64)> = None;
                for &size in &sizes {
                    let get = |imp: &'static str| cells.get(&(size, step.clone(), imp));
                    if IMPS.iter().all(|i| get(i).is_none()) {
                        continue;
                    }
                    let secs = |imp| get(imp).and_then(|c| c.secs);
                    let t = |imp| match get(imp) {
                        None => "–".to_owned(),
                        Some(c) => match c.secs {
                            Some(s) if c.failures > 0 => {
                                format!("{} ({} of {} failed)", fmt_secs(s), c.failures, c.runs)
                            }
                            Some(s) => fmt_secs(s),
                            None => "failed".to_owned(),
                        },
                    };
                    let m = |imp| {
                        get(imp)
                            .and_then(|c| c.rss_mib)
                            .map_or("–".to_owned(), |v| format!("{v:.1}"))
                    };
                    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                        _ => "–".to_owned(),
                    };
                    let ours = secs("ours");
                    // Growth exponent against the previous size: 1 is linear, 2 quadratic,
                    // 0 flat (noise on a busy machine moves it by ±0.2 or more).
                    let growth = match (prev, ours) {
                        (Some((ps, pt)), Some(t)) if pt > 0.0 && t > 0.0 && size > ps => {
                            format!("{:.2}", (t / pt).ln() / (size as f64 / ps as f64).ln())
                        }
                        _ => "–".to_owned(),
                    };
                    if let Some(t) = ours {
                        prev = Some((size, t));
                    }
                    let notes: Vec<String> = IMPS
                        .iter()
                        .filter_map(|imp| {
                            get(imp)
                                .filter(|c| !c.note.is_empty())
                                .map(|c| format!("{imp}: {}", c.note.replace('|', "/")))
                        })
                        .collect();
                    let _ = writeln!(
                        md,
                        "| {} | {step} | {} | {} | {} | {} | {} | {} | {} | {} | {growth} | {} |",
                        axis.fmt_size(size),
                        t("ours"),
                        t("moby"),
                        t("tar"),
                        ratio(ours, secs("moby")),
                        ratio(ours, secs("tar")),
                        m("ours"),
                        m("moby"),
                        m("tar"),
                        notes.join("; ")
                    );
                }
            }
            md.push('\n');
        }
        md
    }

    /// `<dir>/<axis>.svg`: time (left) and peak RSS (right) against size, log-log.
    pub fn charts(&self, axes: &[Axis], dir: &Path) -> Result<Vec<String>> {
        let mut written = Vec::new();
        for &axis in axes {
            let (cells, steps) = self.cells(axis);
            if cells.is_empty() {
                continue;
            }
            let file = dir.join(format!("{}.svg", axis.name()));
            chart(axis, &cells, &steps, &file).map_err(|e| anyhow!("chart {file:?}: {e}"))?;
            written.push(file.display().to_string());
        }
        Ok(written)
    }
}

pub fn fmt_secs(s: f64) -> String {
    if s >= 0.1 {
        format!("{s:.3}")
    } else {
        format!("{s:.5}")
    }
}

type Series = (String, &'static str, usize, Vec<(f64, f64)>);

fn chart(
    axis: Axis,
    cells: &BTreeMap<Key, Cell>,
    steps: &[String],
    file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    // Series: one per (step, implementation) with at least one successful size.
    let mut time: Vec<Series> = Vec::new();
    let mut mem: Vec<Series> = Vec::new();
    for (si, step) in steps.iter().enumerate() {
        for imp in IMPS {
            let mut t = Vec::new();
            let mut m = Vec::new();
            for ((size, s, i), c) in cells {
                if s == step && *i == imp {
                    if let Some(secs) = c.secs {
                        t.push((*size as f64, secs.max(1e-5)));
                    }
                    if let Some(r) = c.rss_mib {
                        m.push((*size as f64, r.max(0.1)));
                    }
                }
            }
            if !t.is_empty() {
                time.push((step.clone(), imp, si, t));
            }
            if !m.is_empty() {
                mem.push((step.clone(), imp, si, m));
            }
        }
    }
    let root = SVGBackend::new(file, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    panel(&left, axis, &time, "wall time (s)", "time")?;
    panel(&right, axis, &mem, "peak RSS (MiB)", "memory")?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    axis: Axis,
    series: &[Series],
    y_desc: &str,
    what: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let xs = series.iter().flat_map(|s| s.3.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.3.iter().map(|p| p.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if x0 > x1 {
        return Ok(());
    }
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: {what}", axis.title()),
            ("sans-serif", 18).into_font(),
        )
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x0 / 1.6..x1 * 1.6).log_scale(),
            (y0 / 1.8..y1 * 2.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(axis.unit())
        .y_desc(y_desc)
        .x_label_formatter(&|x| axis.fmt_size(x.round() as u64))
        .y_label_formatter(&|y| compact(*y))
        .draw()?;
    for (step, imp, si, pts) in series {
        let color = Palette99::pick(*si).to_rgba();
        let width = if *imp == "ours" { 3 } else { 1 };
        let label = format!("{step} · {}", imp_label(imp));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
            });
        match *imp {
            "ours" => {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
            "moby" => {
                chart.draw_series(
                    pts.iter()
                        .map(|&p| TriangleMarker::new(p, 5, color.filled())),
                )?;
            }
            _ => {
                chart.draw_series(pts.iter().map(|&p| Cross::new(p, 4, color.stroke_width(2))))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

/// A tick label without trailing zeros: 1000, 2.5, 0.001.
fn compact(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn imp_label(imp: &str) -> &str {
    match imp {
        "ours" => "ours ●",
        "moby" => "moby 20.10 ▲",
        _ => "GNU tar ✕",
    }
}
