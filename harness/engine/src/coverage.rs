//! The coverage gate: the troubleshooting guide itself is the test plan. Its rows are parsed
//! from the Markdown (each issue's Cause/Resolution table, the error code table and the
//! resolutions listed under a code, the Symptom to Action Map, the Health Status Matrix, the
//! Prometheus queries) and matched with the scenarios' `guide` fields. A row without a scenario,
//! or a scenario whose row is gone from the guide, fails the gate; rows known to be missing are
//! listed in a gaps file, which may only shrink.

use serde::Serialize;
use std::collections::BTreeMap;
use veritas_scenario::Scenario;

/// Where in the guide a row sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    /// A `| Cause | Resolution |` row of an `### Issue:` section.
    Cause,
    /// A row of the error code table.
    ErrorCode,
    /// A numbered resolution under `### EXXXX:` (each names a cause of the code).
    CodeResolution,
    SymptomMap,
    HealthMatrix,
    Promql,
}

/// One row of the guide: `section` and `cause` are what a scenario's `guide` names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GuideRow {
    pub kind: RowKind,
    pub section: String,
    pub cause: String,
    /// 1-based line of the row in the guide.
    pub line: usize,
}

impl GuideRow {
    /// The row as one line (what the gaps file lists).
    pub fn key(&self) -> String {
        format!("{} / {}", self.section, self.cause)
    }
}

/// The guide: the specification beside the repository (`../shared/guide/`) where it is there,
/// else the copy committed in `docs/guide/` (a test keeps the two equal).
pub fn default_guide() -> std::path::PathBuf {
    let root = crate::repo_root();
    let shared = root.join("../shared/guide/deployment-troubleshooting.md");
    if shared.exists() {
        shared
    } else {
        root.join("docs/guide/deployment-troubleshooting.md")
    }
}

/// Section title prefixes a scenario's `guide.section` uses for the guide's reference parts.
pub const ERROR_CODES: &str = "Common Error Codes";
pub const SYMPTOM_MAP: &str = "Symptom to Action Map";
pub const HEALTH_MATRIX: &str = "Health Status Matrix";
pub const PROMQL: &str = "Prometheus Queries";

fn cells(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    if !t.starts_with('|') || t.chars().all(|c| matches!(c, '|' | '-' | ' ' | ':')) {
        return None;
    }
    Some(
        t.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect(),
    )
}

/// Every row of the guide, in its order.
pub fn parse_guide(text: &str) -> Vec<GuideRow> {
    let mut rows = Vec::new();
    // (heading text, table header) as the parse goes.
    let mut heading = String::new();
    let mut header: Option<Vec<String>> = None;
    let mut in_code_block = false;
    let mut in_resolution = false;
    let mut last_comment: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            // The Prometheus section: each query follows its `# Title` comment.
            if heading == PROMQL {
                if let Some(c) = t.strip_prefix('#') {
                    last_comment = Some(c.trim().to_string());
                } else if !t.is_empty() {
                    if let Some(title) = last_comment.take() {
                        rows.push(GuideRow {
                            kind: RowKind::Promql,
                            section: PROMQL.into(),
                            cause: title,
                            line: n,
                        });
                    }
                }
            }
            continue;
        }
        if let Some(h) = t.strip_prefix("### ") {
            heading = h.trim_start_matches("Issue:").trim().to_string();
            header = None;
            in_resolution = false;
            continue;
        }
        if t.starts_with("## ") || t.starts_with("# ") {
            heading.clear();
            header = None;
            in_resolution = false;
            continue;
        }
        if t == "**Resolution:**" {
            in_resolution = true;
            continue;
        }
        if in_resolution {
            // `1. Restart the CORE Runtime if not running` under `### E1001: NAME`.
            if let Some((num, item)) = t.split_once(". ") {
                if num.chars().all(|c| c.is_ascii_digit()) && !num.is_empty() {
                    let section = format!("{ERROR_CODES}: {}", heading.replacen(": ", " ", 1));
                    rows.push(GuideRow {
                        kind: RowKind::CodeResolution,
                        section,
                        cause: item.trim().to_string(),
                        line: n,
                    });
                    continue;
                }
            }
            if !t.is_empty() {
                in_resolution = false;
            }
        }
        let Some(c) = cells(t) else {
            if !t.starts_with('|') {
                header = None;
            }
            continue;
        };
        let Some(h) = &header else {
            header = Some(c);
            continue;
        };
        let kind = match (h.first().map(String::as_str), heading.as_str()) {
            (Some("Cause"), _) => RowKind::Cause,
            (Some("Code"), _) => RowKind::ErrorCode,
            (Some("Symptom"), _) => RowKind::SymptomMap,
            (Some("Check"), HEALTH_MATRIX) => RowKind::HealthMatrix,
            // Contacts and other tables are not rows of the test plan.
            _ => continue,
        };
        let (section, cause) = match kind {
            RowKind::ErrorCode => (
                format!(
                    "{ERROR_CODES}: {} {}",
                    c[0],
                    c.get(1).cloned().unwrap_or_default()
                ),
                c.get(2).cloned().unwrap_or_default(),
            ),
            RowKind::SymptomMap => (SYMPTOM_MAP.into(), c[0].clone()),
            RowKind::HealthMatrix => (HEALTH_MATRIX.into(), c[0].clone()),
            _ => (heading.clone(), c[0].clone()),
        };
        rows.push(GuideRow {
            kind,
            section,
            cause,
            line: n,
        });
    }
    rows
}

/// Whether scenario `s` proves `row`.
pub fn covers(row: &GuideRow, s: &Scenario) -> bool {
    covers_main(row, s) || s.guide.also.iter().any(|a| is_row(row, a))
}

fn is_row(row: &GuideRow, a: &veritas_scenario::AlsoRow) -> bool {
    a.section == row.section && a.cause == row.cause
}

/// Whether the scenario's own `guide` reference (not its `also` rows) names `row`.
fn covers_main(row: &GuideRow, s: &Scenario) -> bool {
    let g = &s.guide;
    match row.kind {
        // The code's own row: any scenario of the code.
        RowKind::ErrorCode => g.section == row.section,
        // A listed resolution of a code: a scenario of the code whose remedy is that one.
        RowKind::CodeResolution => g.section == row.section && g.remedy.starts_with(&row.cause),
        _ => g.section == row.section && g.cause == row.cause,
    }
}

/// What a run said of a scenario (from its JSON report).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub verdict: String,
    pub time_to_detect_s: Option<f64>,
    pub time_to_recover_s: Option<f64>,
}

/// Verdicts of every scenario in JSON reports (`report.json` of a run, or the nextest
/// binary's per-test files): the remedied run, not its ablation.
pub fn outcomes(reports: &[serde_json::Value]) -> BTreeMap<String, Outcome> {
    let mut out = BTreeMap::new();
    for r in reports {
        for s in r["scenarios"].as_array().into_iter().flatten() {
            let Some(id) = s["id"].as_str() else { continue };
            out.insert(
                id.to_string(),
                Outcome {
                    verdict: s["verdict"].as_str().unwrap_or("?").to_string(),
                    time_to_detect_s: s["time_to_detect_s"].as_f64(),
                    time_to_recover_s: s["time_to_recover_s"].as_f64(),
                },
            );
        }
    }
    out
}

/// One line of the coverage table.
#[derive(Debug, Clone, Serialize)]
pub struct Covered {
    pub row: GuideRow,
    pub scenarios: Vec<String>,
    /// Listed in the gaps file: missing, and known to be.
    pub known_gap: bool,
    pub outcome: Option<Outcome>,
}

/// The gate's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    pub rows: Vec<Covered>,
    /// Rows without a scenario that the gaps file does not list.
    pub missing: Vec<String>,
    /// Scenarios that name no row of the guide (their row was renamed or removed).
    pub orphans: Vec<String>,
    /// Gaps file lines that a scenario now covers, or that are no row at all: remove them.
    pub stale_gaps: Vec<String>,
}

impl Coverage {
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.orphans.is_empty() && self.stale_gaps.is_empty()
    }
}

/// Matches the guide's rows with the scenarios; `gaps` are row keys known to be missing.
pub fn check(
    rows: &[GuideRow],
    scenarios: &[Scenario],
    gaps: &[String],
    outcomes: &BTreeMap<String, Outcome>,
) -> Coverage {
    let mut c = Coverage::default();
    for row in rows {
        let ids: Vec<String> = scenarios
            .iter()
            .filter(|s| covers(row, s))
            .map(|s| s.id.clone())
            .collect();
        let key = row.key();
        let known_gap = gaps.contains(&key);
        if ids.is_empty() && !known_gap {
            c.missing.push(format!("line {}: {key}", row.line));
        }
        if !ids.is_empty() && known_gap {
            c.stale_gaps
                .push(format!("{key} (covered by {})", ids.join(", ")));
        }
        let outcome = ids.first().and_then(|id| outcomes.get(id)).cloned();
        c.rows.push(Covered {
            row: row.clone(),
            scenarios: ids,
            known_gap,
            outcome,
        });
    }
    for g in gaps {
        if !rows.iter().any(|r| &r.key() == g) {
            c.stale_gaps.push(format!("{g} (no such row in the guide)"));
        }
    }
    for s in scenarios {
        // Engine self-tests name no guide row.
        if s.guide.section == "engine self-test" {
            continue;
        }
        if !rows.iter().any(|r| covers_main(r, s)) {
            c.orphans.push(format!(
                "{}: {} / {} (remedy: {})",
                s.id, s.guide.section, s.guide.cause, s.guide.remedy
            ));
        }
        for a in &s.guide.also {
            if !rows.iter().any(|r| is_row(r, a)) {
                c.orphans
                    .push(format!("{}: also {} / {}", s.id, a.section, a.cause));
            }
        }
    }
    c
}

/// The gaps file: one row key per line; `#` comments and blank lines ignored.
pub fn parse_gaps(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The table people read.
pub fn table(c: &Coverage) -> String {
    let secs = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}s"));
    let mut out = format!(
        "{:<5} {:<58} {:<14} {:<8} {:>8} {:>8}\n",
        "LINE", "GUIDE ROW", "SCENARIO", "VERDICT", "DETECT", "RECOVER"
    );
    for r in &c.rows {
        let shown = crate::expect::clip(&r.row.key(), 57);
        let (id, verdict) = match (r.scenarios.first(), &r.outcome) {
            (Some(id), Some(o)) => (id.clone(), o.verdict.clone()),
            (Some(id), None) => (id.clone(), "not run".into()),
            (None, _) if r.known_gap => ("-".into(), "gap".into()),
            (None, _) => ("-".into(), "MISSING".into()),
        };
        out.push_str(&format!(
            "{:<5} {:<58} {:<14} {:<8} {:>8} {:>8}\n",
            r.row.line,
            shown,
            id,
            verdict,
            secs(r.outcome.as_ref().and_then(|o| o.time_to_detect_s)),
            secs(r.outcome.as_ref().and_then(|o| o.time_to_recover_s)),
        ));
    }
    let covered = c.rows.iter().filter(|r| !r.scenarios.is_empty()).count();
    out.push_str(&format!(
        "\n{covered} of {} guide rows have a scenario; {} known gaps; {} missing, {} orphaned scenarios, {} stale gap lines\n",
        c.rows.len(),
        c.rows.iter().filter(|r| r.known_gap).count(),
        c.missing.len(),
        c.orphans.len(),
        c.stale_gaps.len()
    ));
    for (what, list) in [
        ("row without a scenario", &c.missing),
        ("scenario whose row is not in the guide", &c.orphans),
        ("gaps file line to remove", &c.stale_gaps),
    ] {
        for l in list {
            out.push_str(&format!("  {what}: {l}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = r#"# Guide
### Health Status Matrix

| Check | Command | Healthy | Degraded | Critical |
|-------|---------|---------|----------|----------|
| Pods | kubectl get pods | All Running | Some NotReady | CrashLoopBackOff |

### Issue: DNS Not Updating

```bash
# 1. Check service endpoints
kubectl get endpoints veritas-spark
```

| Cause | Resolution |
|-------|------------|
| DNS cache stale | Wait TTL or restart CoreDNS |
| Service selector wrong | Fix selector to match new pods |

## Common Error Codes

| Code | Name | Description | Severity |
|------|------|-------------|----------|
| E1001 | IPC_CONNECTION_FAILED | Cannot connect to runtime socket | Critical |

### E1001: IPC_CONNECTION_FAILED

**Resolution:**
1. Restart the CORE Runtime if not running
2. Check directory permissions on socket path

### Prometheus Queries
```promql
# Error rate
sum(rate(x[5m]))

# P99 latency
histogram_quantile(0.99, y)
```

### Symptom to Action Map

| Symptom | First Command | Likely Issue |
|---------|---------------|--------------|
| All pods down | kubectl get pods | Cluster issue or config error |

### Emergency Contacts

| Situation | Contact | Method |
|-----------|---------|--------|
| SEV1 Incident | On-call | PagerDuty |
"#;

    #[test]
    fn every_kind_of_row_is_parsed_with_its_line() {
        let rows = parse_guide(GUIDE);
        let keys: Vec<(RowKind, String)> = rows.iter().map(|r| (r.kind, r.key())).collect();
        assert_eq!(
            keys,
            vec![
                (RowKind::HealthMatrix, "Health Status Matrix / Pods".to_string()),
                (RowKind::Cause, "DNS Not Updating / DNS cache stale".into()),
                (RowKind::Cause, "DNS Not Updating / Service selector wrong".into()),
                (
                    RowKind::ErrorCode,
                    "Common Error Codes: E1001 IPC_CONNECTION_FAILED / Cannot connect to runtime socket".into()
                ),
                (
                    RowKind::CodeResolution,
                    "Common Error Codes: E1001 IPC_CONNECTION_FAILED / Restart the CORE Runtime if not running".into()
                ),
                (
                    RowKind::CodeResolution,
                    "Common Error Codes: E1001 IPC_CONNECTION_FAILED / Check directory permissions on socket path".into()
                ),
                (RowKind::Promql, "Prometheus Queries / Error rate".into()),
                (RowKind::Promql, "Prometheus Queries / P99 latency".into()),
                (RowKind::SymptomMap, "Symptom to Action Map / All pods down".into()),
            ]
        );
        assert_eq!(rows[1].line, 17);
    }

    #[test]
    fn the_committed_copy_is_the_guide() {
        let root = crate::repo_root();
        let copy = std::fs::read_to_string(root.join("docs/guide/deployment-troubleshooting.md"))
            .expect("docs/guide/deployment-troubleshooting.md");
        // Beside the repository on a development machine; a bare clone has only the copy.
        if let Ok(spec) =
            std::fs::read_to_string(root.join("../shared/guide/deployment-troubleshooting.md"))
        {
            assert!(
                spec == copy,
                "docs/guide/ differs from ../shared/guide/: copy the specification again"
            );
        }
    }

    #[test]
    fn the_real_guide_has_every_part() {
        let text = std::fs::read_to_string(default_guide()).expect("the guide");
        let rows = parse_guide(&text);
        let count = |k| rows.iter().filter(|r| r.kind == k).count();
        assert_eq!(count(RowKind::Cause), 39, "{rows:#?}");
        assert_eq!(count(RowKind::ErrorCode), 15);
        assert_eq!(count(RowKind::CodeResolution), 16);
        assert_eq!(count(RowKind::SymptomMap), 6);
        assert_eq!(count(RowKind::HealthMatrix), 4);
        assert_eq!(count(RowKind::Promql), 5);
    }
}
