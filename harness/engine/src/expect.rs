//! Checking what a command showed against a scenario's [`Expect`].

use crate::snapshot;
use veritas_scenario::{ExitExpect, Expect, ValueExpect};
use veritas_vocab::ErrorCode;

/// What a command showed: exit status and both streams.
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    /// `None` when killed by a signal or timed out.
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CommandOutput {
    /// One line for reports: exit status and the first lines of output.
    pub fn summary(&self) -> String {
        let exit = match (self.exit, self.timed_out) {
            (_, true) => "timed out".to_string(),
            (Some(c), _) => format!("exit {c}"),
            (None, _) => "killed by a signal".to_string(),
        };
        let text = format!("{}{}", self.stdout, self.stderr);
        format!("{exit}: {}", clip(text.trim(), 400))
    }

    fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Shortens `s` to about `max` bytes on a char boundary, marking the cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Whether `text` carries `code`: as `E2001 MODEL_LOAD_FAILED` text, or as a JSON `"code"` field.
pub fn carries_code(text: &str, code: ErrorCode) -> bool {
    text.contains(&format!("{} {}", code.code(), code.name()))
        || text.contains(&format!("\"code\":\"{}\"", code.code()))
        || text.contains(&format!("\"code\": \"{}\"", code.code()))
}

fn contains(haystack: &str, needle: &str) -> bool {
    match needle.strip_prefix("(?i)") {
        Some(n) => haystack.to_lowercase().contains(&n.to_lowercase()),
        None => haystack.contains(needle),
    }
}

/// Every mismatch between `out` and `e` (empty: the expectation holds).
pub fn check(e: &Expect, out: &CommandOutput, snapshot_ctx: &snapshot::Redactions) -> Vec<String> {
    let mut bad = Vec::new();
    if out.timed_out {
        bad.push("the command did not finish within its deadline".to_string());
    }
    if let Some(want) = ExitExpect::required(e.exit) {
        if out.exit != Some(want) {
            let why = if e.exit.is_none() {
                ": a step without `exit` must succeed"
            } else {
                ""
            };
            bad.push(format!(
                "exit status {} (expected {want}{why})",
                out.exit.map_or("none".into(), |c| c.to_string())
            ));
        }
    }
    let all = out.combined();
    if let Some(code) = &e.code {
        // Validation guarantees a known code.
        if let Some(ec) = ErrorCode::parse(code) {
            if !carries_code(&all, ec) {
                bad.push(format!("no {} {} in the output", ec.code(), ec.name()));
            }
        }
    }
    for needle in &e.output {
        if !contains(&all, needle) {
            bad.push(format!("output lacks {needle:?}"));
        }
    }
    for needle in &e.not_output {
        if contains(&all, needle) {
            bad.push(format!("output contains {needle:?}"));
        }
    }
    if !e.words.is_empty() || !e.not_words.is_empty() {
        let words: std::collections::BTreeSet<&str> = all
            .split(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
            .filter(|w| !w.is_empty())
            .collect();
        for w in &e.words {
            if !words.contains(w.as_str()) {
                bad.push(format!("output lacks the word {w:?}"));
            }
        }
        for w in &e.not_words {
            if words.contains(w.as_str()) {
                bad.push(format!("output has the word {w:?}"));
            }
        }
    }
    if !e.json.is_empty() {
        match serde_json::from_str::<serde_json::Value>(out.stdout.trim()) {
            Err(err) => bad.push(format!("stdout is not JSON ({err})")),
            Ok(v) => {
                for (ptr, want) in &e.json {
                    match v.pointer(ptr) {
                        Some(got) if got == want => {}
                        Some(got) => bad.push(format!("{ptr} is {got} (expected {want})")),
                        None => bad.push(format!("{ptr} is missing (expected {want})")),
                    }
                }
            }
        }
    }
    if let Some(name) = &e.snapshot {
        if let Err(diff) = snapshot::check(name, &all, snapshot_ctx) {
            bad.push(diff);
        }
    }
    bad
}

/// Every mismatch of a number (or its absence) against `e`.
pub fn check_value(e: &ValueExpect, got: Option<f64>) -> Vec<String> {
    let mut bad = Vec::new();
    match got {
        None if e.absent => {}
        None => bad.push("no value (series absent or empty result)".into()),
        Some(v) if e.absent => bad.push(format!("value {v} present (expected none)")),
        Some(v) => {
            if let Some(x) = e.equals {
                if (v - x).abs() > 1e-9 * x.abs().max(1.0) {
                    bad.push(format!("value {v} (expected = {x})"));
                }
            }
            if let Some(x) = e.at_least {
                if v < x {
                    bad.push(format!("value {v} (expected >= {x})"));
                }
            }
            if let Some(x) = e.at_most {
                if v > x {
                    bad.push(format!("value {v} (expected <= {x})"));
                }
            }
        }
    }
    bad
}

/// Sum of the samples of `name` whose labels include all of `labels`, from Prometheus text
/// exposition. `None` when no series matches.
pub fn scrape_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if matches {
            if let Ok(v) = value.parse::<f64>() {
                sum = Some(sum.unwrap_or(0.0) + v);
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(exit: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            exit: Some(exit),
            stdout: stdout.into(),
            stderr: stderr.into(),
            timed_out: false,
        }
    }

    #[test]
    fn codes_are_found_in_text_and_json() {
        let code = ErrorCode::parse("E2001").unwrap();
        assert!(carries_code(
            "E2001 MODEL_LOAD_FAILED: sha256 mismatch",
            code
        ));
        assert!(carries_code(
            r#"{"code":"E2001","name":"MODEL_LOAD_FAILED"}"#,
            code
        ));
        assert!(!carries_code("E2002 MODEL_NOT_FOUND: E2001?", code));
    }

    #[test]
    fn words_match_whole_addresses_only() {
        let e = Expect {
            words: vec!["10.244.0.44".into()],
            not_words: vec!["10.244.0.4".into()],
            ..Default::default()
        };
        let nslookup = "Name:\tveritas-spark\nAddress: 10.244.0.44\n";
        assert!(check(&e, &out(0, nslookup, ""), &Default::default()).is_empty());
        assert!(check(&e, &out(0, "10.244.0.44:8080", ""), &Default::default()).is_empty());
        let stale = check(
            &e,
            &out(0, "Address: 10.244.0.4\n", ""),
            &Default::default(),
        );
        assert_eq!(
            stale,
            vec![
                "output lacks the word \"10.244.0.44\"".to_string(),
                "output has the word \"10.244.0.4\"".to_string()
            ]
        );
    }

    #[test]
    fn every_mismatch_is_named() {
        let e = Expect {
            exit: Some(ExitExpect::Code(0)),
            code: Some("E1001".into()),
            output: vec!["(?i)AUTO-promotion".into()],
            not_output: vec!["panic".into()],
            json: [("/state".to_string(), serde_json::json!("ready"))].into(),
            snapshot: None,
            ..Default::default()
        };
        let bad = check(
            &e,
            &out(1, r#"{"state":"loading"}"#, "thread panicked"),
            &Default::default(),
        );
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert!(bad[0].contains("exit status 1 (expected 0)"));
        assert!(bad.iter().any(|b| b.contains("/state is \"loading\"")));
        let ok = check(
            &e,
            &out(
                0,
                r#"{"state":"ready","auto-promotion":true}"#,
                "E1001 IPC_CONNECTION_FAILED: x",
            ),
            &Default::default(),
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn a_step_without_exit_must_succeed_unless_it_says_any() {
        let silent = Expect::default();
        let bad = check(&silent, &out(1, "", "boom"), &Default::default());
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("a step without `exit` must succeed"),
            "{bad:?}"
        );
        assert!(check(&silent, &out(0, "", ""), &Default::default()).is_empty());
        let any = Expect {
            exit: Some(ExitExpect::Any(veritas_scenario::AnyExit::Any)),
            reason: Some("collects evidence".into()),
            ..Default::default()
        };
        assert!(check(&any, &out(3, "", ""), &Default::default()).is_empty());
        let killed = CommandOutput {
            exit: None,
            ..Default::default()
        };
        assert_eq!(check(&silent, &killed, &Default::default()).len(), 1);
    }

    #[test]
    fn values_compare_and_absence_is_not_zero() {
        let e = ValueExpect {
            at_least: Some(1.0),
            ..Default::default()
        };
        assert!(check_value(&e, Some(1.0)).is_empty());
        assert_eq!(check_value(&e, Some(0.0)).len(), 1);
        assert_eq!(check_value(&e, None).len(), 1);
        let absent = ValueExpect {
            absent: true,
            ..Default::default()
        };
        assert!(check_value(&absent, None).is_empty());
        assert_eq!(check_value(&absent, Some(0.0)).len(), 1);
    }

    #[test]
    fn scrape_sums_matching_series() {
        let text = "# HELP x\nveritas_spark_errors_total{code=\"E1003\",deployment=\"stable\"} 2\n\
                    veritas_spark_errors_total{code=\"E2001\",deployment=\"stable\"} 1\n\
                    veritas_spark_errors_total{code=\"E1003\",deployment=\"canary\"} 3\n";
        assert_eq!(
            scrape_value(text, "veritas_spark_errors_total", &[("code", "E1003")]),
            Some(5.0)
        );
        assert_eq!(
            scrape_value(text, "veritas_spark_errors_total", &[]),
            Some(6.0)
        );
        assert_eq!(
            scrape_value(text, "veritas_spark_errors_total", &[("code", "E9")]),
            None
        );
    }
}
