//! The report: bills and latencies as markdown tables, ready to paste into the README.

use crate::model::Bill;
use crate::traces::Trace;

/// The bills of one trace: the limit and every policy.
pub struct TraceResult<'a> {
    pub trace: &'a Trace,
    pub limit: Bill,
    /// (policy label, bill), in the order to print.
    pub policies: Vec<(String, Bill)>,
}

impl TraceResult<'_> {
    fn rows(&self) -> impl Iterator<Item = (&str, &Bill)> {
        std::iter::once(("physical limit", &self.limit))
            .chain(self.policies.iter().map(|(p, b)| (p.as_str(), b)))
    }
}

/// Billed over the limit.
pub fn ratio(bill: &Bill, limit: &Bill) -> f64 {
    bill.billed as f64 / limit.billed as f64
}

/// Mean of whole seconds.
pub fn mean(values: &[i64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<i64>() as f64 / values.len() as f64
}

/// The `p`-th percentile (nearest rank) of whole seconds.
pub fn percentile(values: &[i64], p: usize) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => 0,
        n => sorted[(n * p).div_ceil(100).clamp(1, n) - 1],
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Billed instance-seconds, the ratio to the limit, starts and time to first handling.
pub fn cost_table(results: &[TraceResult]) -> String {
    let mut out = String::from(
        "| trace | policy | billed instance-s | × limit | instance starts | first handling, mean | first handling, p95 |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        for (policy, bill) in r.rows() {
            out.push_str(&format!(
                "| {} | {policy} | {} | {:.2} | {} | {:.0} s | {} s |\n",
                r.trace.name,
                thousands(bill.billed),
                ratio(bill, &r.limit),
                thousands(bill.starts as i64),
                mean(&bill.latencies),
                percentile(&bill.latencies, 95),
            ));
        }
    }
    out
}

/// Where the billed instance-seconds went.
pub fn breakdown_table(results: &[TraceResult]) -> String {
    let mut out = String::from(
        "| trace | policy | boot + task start | joined, awaiting RunTask | handlers | idle between messages | tail after the last message | 60 s minimum |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        for (policy, bill) in r.rows() {
            let b = &bill.breakdown;
            out.push_str(&format!(
                "| {} | {policy} | {} | {} | {} | {} | {} | {} |\n",
                r.trace.name,
                thousands(b.start),
                thousands(b.awaiting_task),
                thousands(b.busy),
                thousands(b.idle),
                thousands(b.tail),
                thousands(b.minimum),
            ));
        }
    }
    out
}

/// One worker setting of the operator's policy: (billed / limit, mean time to first handling)
/// for each trace.
pub struct SettingRow {
    pub wait: i64,
    pub empty_receives: u32,
    /// "defaults" or empty.
    pub note: &'static str,
    pub cells: Vec<(f64, f64)>,
}

/// Billed over the limit and mean time to first handling for each worker setting (rows) and
/// trace (columns).
pub fn settings_table(traces: &[&Trace], rows: &[SettingRow]) -> String {
    let mut out = String::from("| queue.receiveWaitTimeSeconds | worker.emptyReceives | |");
    let mut rule = String::from("|---:|---:|---|");
    for t in traces {
        out.push_str(&format!(" {} |", t.name));
        rule.push_str("---:|");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} |",
            row.wait, row.empty_receives, row.note
        ));
        for (ratio, latency) in &row.cells {
            out.push_str(&format!(" {ratio:.2} · {latency:.0} s |"));
        }
        out.push('\n');
    }
    out
}

/// EC2 prices: On-Demand per instance-hour, Spot as a share of it.
#[derive(Clone, Copy, Debug)]
pub struct Prices {
    pub on_demand_per_hour: f64,
    pub spot_ratio: f64,
}

impl Prices {
    /// The bill in dollars.
    pub fn dollars(&self, bill: &Bill) -> f64 {
        let on_demand = (bill.billed - bill.billed_spot) as f64;
        let spot = bill.billed_spot as f64 * self.spot_ratio;
        (on_demand + spot) / 3600.0 * self.on_demand_per_hour
    }
}

/// Billed dollars by purchase option, next to the original and the limit (both On-Demand).
pub fn spot_table(results: &[TraceResult], prices: &Prices) -> String {
    let mut out = String::from(
        "| trace | policy | billed instance-s | of which Spot | Spot interruptions | failed Spot launches | billed $ | × limit $ | first handling, mean |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let limit = prices.dollars(&r.limit);
        for (policy, bill) in r.rows() {
            let dollars = prices.dollars(bill);
            out.push_str(&format!(
                "| {} | {policy} | {} | {} | {} | {} | {dollars:.2} | {:.2} | {:.0} s |\n",
                r.trace.name,
                thousands(bill.billed),
                thousands(bill.billed_spot),
                bill.interruptions,
                bill.launch_failures,
                dollars / limit,
                mean(&bill.latencies),
            ));
        }
    }
    out
}
