//! Prometheus series sampled through a cluster scenario's run (request and error rate per
//! track, scrape targets up), for the HTML report's charts: what the checks read, over time.

use crate::cluster::{promql_series_text, ClusterEnv};
use crate::report::Series;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veritas_vocab::metrics::{LABEL_DEPLOYMENT, LABEL_STATUS, REQUESTS_TOTAL, STATUS_ERROR};

/// How often the series are sampled: the scenarios' scrape interval is 5 s.
const EVERY: Duration = Duration::from_secs(5);

/// The queries, each with its name in the report; `{ns}` is the scenario's namespace.
fn queries(ns: &str) -> Vec<(String, String)> {
    vec![
        (
            "requests/s".into(),
            format!("sum by ({LABEL_DEPLOYMENT}) (rate({REQUESTS_TOTAL}{{namespace=\"{ns}\"}}[30s]))"),
        ),
        (
            "errors/s".into(),
            format!(
                "sum by ({LABEL_DEPLOYMENT}) (rate({REQUESTS_TOTAL}{{namespace=\"{ns}\",{LABEL_STATUS}=\"{STATUS_ERROR}\"}}[30s]))"
            ),
        ),
        (
            "targets up".into(),
            format!("sum by (service) (up{{namespace=\"{ns}\"}})"),
        ),
    ]
}

/// Points per series name.
type Points = Arc<Mutex<BTreeMap<String, Vec<(f64, f64)>>>>;

/// A running sampler; [`Sampler::finish`] stops it and hands over the series.
pub struct Sampler {
    task: tokio::task::JoinHandle<()>,
    points: Points,
}

impl Sampler {
    /// Starts sampling; times are seconds since `t0` (the scenario's start).
    pub fn start(env: Arc<ClusterEnv>, namespace: String, t0: Instant) -> Sampler {
        let points: Points = Arc::default();
        let sink = points.clone();
        let task = tokio::spawn(async move {
            let queries = queries(&namespace);
            loop {
                for (name, query) in &queries {
                    // A failed query is a gap in the chart, not a failure of the scenario.
                    let Ok(series) = promql_series_text(&env, query, EVERY).await else {
                        continue;
                    };
                    let t = t0.elapsed().as_secs_f64();
                    let mut map = sink.lock().expect("sampler points");
                    for (labels, value) in series {
                        let key = if labels.is_empty() {
                            name.clone()
                        } else {
                            format!("{name} {{{labels}}}")
                        };
                        map.entry(key).or_default().push((t, value));
                    }
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        Sampler { task, points }
    }

    pub fn finish(self) -> Vec<Series> {
        self.task.abort();
        let map = std::mem::take(&mut *self.points.lock().expect("sampler points"));
        map.into_iter()
            .map(|(name, points)| Series { name, points })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_scoped_to_the_namespace() {
        for (_, q) in super::queries("veritas-cnt-1-00ab") {
            assert!(q.contains("namespace=\"veritas-cnt-1-00ab\""), "{q}");
        }
    }
}
