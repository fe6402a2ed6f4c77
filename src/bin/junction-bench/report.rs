//! Latency histograms and the two outputs of every run: a human table and one JSON line.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies in microseconds, from 1 µs to 10 minutes at 3 significant digits.
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds") }
    }
}

impl Latency {
    pub fn record(&mut self, micros: u64) {
        self.histogram.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        self.histogram.add(&other.histogram).expect("histograms with the same bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    fn ms_at(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn p50(&self) -> f64 {
        self.ms_at(0.50)
    }
    pub fn p95(&self) -> f64 {
        self.ms_at(0.95)
    }
    pub fn p99(&self) -> f64 {
        self.ms_at(0.99)
    }
    pub fn max(&self) -> f64 {
        if self.histogram.is_empty() { 0.0 } else { self.histogram.max() as f64 / 1000.0 }
    }

    /// `{"p50":…,"p95":…,"p99":…,"max":…}` in milliseconds.
    pub fn to_json(&self) -> Value {
        json!({"p50": round(self.p50()), "p95": round(self.p95()), "p99": round(self.p99()), "max": round(self.max())})
    }
}

pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One run's results: printed as a two-line table (names, values), then as one JSON line.
/// Names are JSON keys (`deliveries_per_sec`); the table shows them shorter (`deliveries/s`).
pub struct Report {
    columns: Vec<(String, String)>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    pub fn new(mode: &str) -> Report {
        let mut json = serde_json::Map::new();
        json.insert("mode".into(), json!(mode));
        Report { columns: vec![("mode".into(), mode.into())], json }
    }

    /// A value in both outputs.
    pub fn field(&mut self, name: &str, shown: impl ToString, value: Value) -> &mut Self {
        self.columns.push((name.replace("_per_sec", "/s").replace('_', " "), shown.to_string()));
        self.json.insert(name.into(), value);
        self
    }

    /// A value only in the JSON line.
    pub fn extra(&mut self, name: &str, value: Value) -> &mut Self {
        self.json.insert(name.into(), value);
        self
    }

    pub fn count(&mut self, name: &str, n: u64) -> &mut Self {
        self.field(name, thousands(n as f64), json!(n))
    }

    pub fn rate(&mut self, name: &str, per_sec: f64) -> &mut Self {
        self.field(name, thousands(per_sec), json!(per_sec.round()))
    }

    pub fn latency(&mut self, name: &str, latency: &Latency) -> &mut Self {
        let name = name.replace('_', " ");
        self.columns.push((format!("{name} p50"), format!("{:.2}ms", latency.p50())));
        self.columns.push((format!("{name} p95"), format!("{:.2}ms", latency.p95())));
        self.columns.push((format!("{name} p99"), format!("{:.2}ms", latency.p99())));
        self.columns.push((format!("{name} max"), format!("{:.2}ms", latency.max())));
        self.json.insert(format!("{}_ms", name.replace(' ', "_")), latency.to_json());
        self
    }

    pub fn print(&self) {
        let widths: Vec<usize> = self.columns.iter().map(|(n, v)| n.len().max(v.len())).collect();
        let line = |pick: fn(&(String, String)) -> &String| {
            self.columns
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{:>w$}", pick(c), w = *w))
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(|c| &c.0));
        println!("{}", line(|c| &c.1));
        println!("{}", Value::Object(self.json.clone()));
    }
}

/// 12345.6 → "12,346".
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.4), "1,234,567");
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut latency = Latency::default();
        for us in 1..=1000 {
            latency.record(us * 10);
        }
        assert!((latency.p50() - 5.0).abs() < 0.01, "{}", latency.p50());
        assert!((latency.max() - 10.0).abs() < 0.01, "{}", latency.max());
    }
}
