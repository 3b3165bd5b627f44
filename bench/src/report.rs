//! Medians, same-round ratios, the Markdown table and the targets.

use std::{fmt, fs, thread};

use crate::{redis_server::CommandDelta, serve::Variant, wrk, Options};

/// One measured run of one variant.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub variant: Variant,
    pub round: usize,
    pub wrk: wrk::Report,
    pub commands: CommandDelta,
    /// CPU time over the measured window, in microseconds.
    pub redis_cpu_us: f64,
    pub server_cpu_us: f64,
    pub wrk_cpu_us: f64,
    /// Busy CPU not accounted for by Redis, the server and wrk, as a share of all cores:
    /// other work on the machine (e.g. someone's build).
    pub other_load: f64,
}

impl Measurement {
    fn per_request(&self, total: f64) -> f64 {
        total / self.wrk.requests.max(1) as f64
    }

    fn commands_per_request(&self) -> f64 {
        self.per_request(self.commands.calls as f64)
    }

    pub fn progress_line(&self, rounds: usize) -> String {
        format!(
            "round {}/{rounds} {:<21} {:>8.0} req/s  p50 {}  p99 {}  cmds/req {:.2}  \
             CPU us/req: redis {:.1} server {:.1} wrk {:.1}  other load {:.0}%{}",
            self.round + 1,
            self.variant.name(),
            self.wrk.requests_per_sec,
            ms(self.wrk.p50_us),
            ms(self.wrk.p99_us),
            self.commands_per_request(),
            self.per_request(self.redis_cpu_us),
            self.per_request(self.server_cpu_us),
            self.per_request(self.wrk_cpu_us),
            self.other_load * 100.0,
            match (self.wrk.non_2xx, self.wrk.socket_errors) {
                (0, 0) => String::new(),
                (n, s) => format!("  non-2xx {n} socket errors {s}"),
            }
        )
    }
}

/// The machine and the settings, printed above the results.
pub struct Setup(String);

impl Setup {
    pub fn describe(options: &Options, redis_version: &str, wrk_version: &str) -> Setup {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "?".to_owned());
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        Setup(format!(
            "machine: {cores} cores, {cpu}; redis-server {redis_version}; {wrk_version}\n\
             each server: actix-web HttpServer, {} worker(s); wrk -t1 -c{} -d{}s --latency \
             (warm-up {} s); {} sessions per variant; {} rounds",
            options.workers,
            options.connections,
            options.seconds,
            options.warmup,
            options.connections,
            options.rounds,
        ))
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

struct Results<'a> {
    all: &'a [Measurement],
}

impl Results<'_> {
    fn runs(&self, variant: Variant) -> impl Iterator<Item = &Measurement> {
        self.all.iter().filter(move |m| m.variant == variant)
    }

    fn median_of(&self, variant: Variant, value: impl Fn(&Measurement) -> f64) -> Option<f64> {
        median(self.runs(variant).map(value).collect())
    }

    /// Median over rounds of (throughput of `variant`) / (throughput of `base`) in the same
    /// round.
    fn ratio(&self, variant: Variant, base: Variant) -> Option<f64> {
        median(
            self.runs(variant)
                .filter_map(|m| {
                    let b = self.runs(base).find(|b| b.round == m.round)?;
                    Some(m.wrk.requests_per_sec / b.wrk.requests_per_sec)
                })
                .collect(),
        )
    }
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "".to_owned(), |r| format!("{r:.2}x"))
}

/// Prints the Markdown results table and the targets.
pub fn print(options: &Options, setup: &Setup, all: &[Measurement]) {
    let results = Results { all };
    println!("{setup}\n");
    println!(
        "| variant | req/s | p50 | p99 | non-2xx | Redis cmds/req | PING/req | Redis cmd us/req | \
         Redis CPU us/req | server CPU us/req | vs actix-session-rw | vs plain | vs ro-ttl | vs ro |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &v in &options.variants {
        let med = |f: &dyn Fn(&Measurement) -> f64| results.median_of(v, f).unwrap_or(f64::NAN);
        let non_2xx: u64 = results.runs(v).map(|m| m.wrk.non_2xx).sum();
        let socket: u64 = results.runs(v).map(|m| m.wrk.socket_errors).sum();
        let (vs_ttl, vs_ro) = if v.read_only() {
            (
                results.ratio(v, Variant::ActixRoTtl),
                results.ratio(v, Variant::ActixRo),
            )
        } else {
            (None, None)
        };
        println!(
            "| {} | {:.0} | {} | {} | {}{} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            v.name(),
            med(&|m| m.wrk.requests_per_sec),
            ms(med(&|m| m.wrk.p50_us)),
            ms(med(&|m| m.wrk.p99_us)),
            non_2xx,
            if socket > 0 {
                format!(" (+{socket} socket errors)")
            } else {
                String::new()
            },
            med(&|m| m.commands_per_request()),
            med(&|m| m.per_request(m.commands.pings as f64)),
            med(&|m| m.per_request(m.commands.usec as f64)),
            med(&|m| m.per_request(m.redis_cpu_us)),
            med(&|m| m.per_request(m.server_cpu_us)),
            ratio_cell(results.ratio(v, Variant::ActixRw)),
            ratio_cell(results.ratio(v, Variant::Plain)),
            ratio_cell(vs_ttl),
            ratio_cell(vs_ro),
        );
    }
    let loads: Vec<f64> = all.iter().map(|m| m.other_load).collect();
    let max_load = loads.iter().copied().fold(0.0, f64::max);
    println!(
        "\nreq/s, latencies and per-request costs: medians over {} rounds; ratios: median of \
         the per-round ratios. Other load on the machine during the measured runs (CPU not used \
         by Redis, the server or wrk): median {:.0}%, max {:.0}% of all cores.",
        options.rounds,
        median(loads).unwrap_or(0.0) * 100.0,
        max_load * 100.0
    );
    print_targets(&results);
}

enum Goal {
    AtLeast(f64),
    Equals(f64),
}

fn print_targets(results: &Results) {
    use Variant::*;
    let mut rows: Vec<(String, Option<f64>, Goal)> = vec![
        (
            "mux-rw / actix-session-rw".into(),
            results.ratio(MuxRw, ActixRw),
            Goal::AtLeast(1.2),
        ),
        (
            "mux-ro / actix-session-ro-ttl".into(),
            results.ratio(MuxRo, ActixRoTtl),
            Goal::AtLeast(1.3),
        ),
        (
            "mux-ro / actix-session-ro".into(),
            results.ratio(MuxRo, ActixRo),
            Goal::AtLeast(1.0),
        ),
        (
            "mux-ro-touch / actix-session-ro".into(),
            results.ratio(MuxRoTouch, ActixRo),
            Goal::AtLeast(1.0),
        ),
        (
            "pool-rw / actix-session-rw".into(),
            results.ratio(PoolRw, ActixRw),
            Goal::AtLeast(0.6),
        ),
        (
            "pool-ro / actix-session-ro-ttl".into(),
            results.ratio(PoolRo, ActixRoTtl),
            Goal::AtLeast(0.9),
        ),
        // Encryption at rest and client binding cost a few microseconds of server CPU.
        (
            "mux-rw-hardened / mux-rw".into(),
            results.ratio(MuxRwHardened, MuxRw),
            Goal::AtLeast(0.9),
        ),
        // Lazy loading: the nine assets of a page view cost no Redis round trip.
        (
            "mux-page / actix-session-page".into(),
            results.ratio(MuxPage, ActixPage),
            Goal::AtLeast(1.0),
        ),
        // Three masters on the same two cores as one Redis: what routing and per-node
        // batches cost (on real machines each master adds its own cores; BENCHMARKS.md).
        (
            "cluster-pool-rw / pool-rw".into(),
            results.ratio(ClusterPoolRw, PoolRw),
            Goal::AtLeast(0.8),
        ),
        (
            "cluster-mux-rw / mux-rw".into(),
            results.ratio(ClusterMuxRw, MuxRw),
            Goal::AtLeast(0.8),
        ),
        (
            "cluster-mux-ro / mux-ro".into(),
            results.ratio(ClusterMuxRo, MuxRo),
            Goal::AtLeast(0.8),
        ),
        // The local cache: reads cost no round trip (sliding expiry through touch_after),
        // writes one.
        (
            "mux-ro-cache / actix-session-ro".into(),
            results.ratio(MuxRoCache, ActixRo),
            Goal::AtLeast(2.0),
        ),
        (
            "mux-ro-cache / plain".into(),
            results.ratio(MuxRoCache, Plain),
            Goal::AtLeast(0.8),
        ),
        (
            "pool-ro-cache / actix-session-ro".into(),
            results.ratio(PoolRoCache, ActixRo),
            Goal::AtLeast(2.0),
        ),
        (
            "mux-rw-cache / actix-session-rw".into(),
            results.ratio(MuxRwCache, ActixRw),
            Goal::AtLeast(1.5),
        ),
        (
            "pool-rw-cache / actix-session-rw".into(),
            results.ratio(PoolRwCache, ActixRw),
            Goal::AtLeast(1.5),
        ),
    ];
    for (variant, commands) in [
        (PoolRo, 2.0),
        (MuxRo, 2.0),
        (MuxRoTouch, 1.0),
        // Load (HGETALL, PEXPIRE), then save (PEXPIRE, which says whether the session is
        // still there, HSET, PEXPIRE).
        (PoolRw, 5.0),
        (MuxRw, 5.0),
        // Sealing and binding add no command.
        (MuxRwHardened, 5.0),
        (PoolNew, 4.0),
        // One request in ten loads and saves (5 commands); the assets none.
        (MuxPage, 0.5),
        // The same commands on a cluster: routing adds none.
        (ClusterPoolRw, 5.0),
        (ClusterMuxRw, 5.0),
        (ClusterMuxRo, 2.0),
        // From the cache: nothing (a touch per session per minute, none in a run).
        (PoolRoCache, 0.0),
        (MuxRoCache, 0.0),
    ] {
        rows.push((
            format!("{} Redis commands/request", variant.name()),
            results.median_of(variant, Measurement::commands_per_request),
            Goal::Equals(commands),
        ));
    }
    for variant in Variant::ALL.into_iter().filter(|v| v.ours_on_redis()) {
        rows.push((
            format!("{} PING/request", variant.name()),
            results.median_of(variant, |m| m.per_request(m.commands.pings as f64)),
            Goal::Equals(0.0),
        ));
    }
    println!("\n| target | goal | measured | result |");
    println!("| --- | ---: | ---: | --- |");
    for (what, value, goal) in rows {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            println!("| {what} | | not measured | - |");
            continue;
        };
        let (goal_text, pass, shortfall) = match goal {
            Goal::AtLeast(g) => (
                format!(">= {g:.2}x"),
                value >= g,
                format!(" ({:+.0}%)", (value / g - 1.0) * 100.0),
            ),
            // Requests cut off at the window's edges move the average by a few thousandths.
            Goal::Equals(g) => (format!("{g}"), (value - g).abs() < 0.05, String::new()),
        };
        let measured = match goal {
            Goal::AtLeast(_) => format!("{value:.2}x"),
            Goal::Equals(_) => format!("{value:.2}"),
        };
        println!(
            "| {what} | {goal_text} | {measured} | {}{} |",
            if pass { "PASS" } else { "MISS" },
            if pass { String::new() } else { shortfall }
        );
    }
}
