//! Runs wrk and reads its report.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use crate::{redis_server::INSTALL, BoxError};

/// Sends `GET /` with the Cookie header of each session in turn.
///
/// With args[2] = `page`, a page view instead: one request in ten goes to `/` (the page, which
/// uses the session), the other nine to `/asset` (stylesheets, scripts, images: the same
/// cookie, no session used).
///
/// wrk's Lua has no per-connection state (`request()` runs per thread, and wrk does not say on
/// which connection the request goes), so a session cannot be tied to a connection. Rotating
/// 32 sessions over 32 connections is the equivalent: each session has about one request in
/// flight at a time. The requests are formatted once in `init`, so that generating them costs
/// wrk as little for the session variants as for the cookie-less ones. args[1]: a file with
/// one Cookie header value per line; empty for no cookie.
pub const SCRIPT: &str = r#"
local requests = {}
local assets = {}
local next_request = 0
local page = false
local in_page = 0

function init(args)
  local cookies = {}
  if args[1] then
    for line in io.lines(args[1]) do
      if #line > 0 then cookies[#cookies + 1] = line end
    end
  end
  page = args[2] == "page"
  if #cookies == 0 then
    requests[1] = wrk.format("GET", "/")
    assets[1] = wrk.format("GET", "/asset")
  else
    for i, cookie in ipairs(cookies) do
      requests[i] = wrk.format("GET", "/", { ["Cookie"] = cookie })
      assets[i] = wrk.format("GET", "/asset", { ["Cookie"] = cookie })
    end
  end
end

function request()
  next_request = next_request % #requests + 1
  if page then
    in_page = in_page % 10 + 1
    if in_page > 1 then return assets[next_request] end
  end
  return requests[next_request]
end
"#;

/// What wrk reported.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

pub fn check_installed() -> Result<(), BoxError> {
    match Command::new("wrk")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("wrk is not installed; install it with `{INSTALL}`").into())
        }
        Err(e) => Err(format!("could not run wrk: {e}").into()),
    }
}

pub fn version() -> String {
    Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .next()
                .map(|l| l.split(" Copyright").next().unwrap_or(l).trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// `wrk -t1 -c<connections> -d<seconds>s --latency -s <script> http://<addr>/ -- <cookies>`
pub fn run(
    addr: SocketAddr,
    connections: u32,
    seconds: u32,
    script: &Path,
    cookies: &Path,
    page: bool,
) -> Result<Report, BoxError> {
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .arg("--")
        .arg(cookies)
        .arg(if page { "page" } else { "single" })
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    parse(&text).ok_or_else(|| format!("could not read wrk's report:\n{text}").into())
}

fn parse(text: &str) -> Option<Report> {
    let mut report = Report::default();
    let mut seen_requests = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("50%") {
            report.p50_us = duration_us(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            report.p99_us = duration_us(rest.trim())?;
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            report.requests = n.trim().parse().ok()?;
            seen_requests = true;
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            report.requests_per_sec = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non_2xx = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            report.socket_errors = rest
                .split(',')
                .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    (seen_requests && report.requests_per_sec > 0.0).then_some(report)
}

/// wrk's durations: `870.00us`, `1.01ms`, `1.20s`, `2.00m`.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let text = "Running 5s test @ http://127.0.0.1:1234/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.08ms  300.00us   9.00ms   90.00%
    Req/Sec    29.80k     1.00k   31.00k    80.00%
  Latency Distribution
     50%  870.00us
     75%    1.01ms
     90%    1.20ms
     99%    2.10ms
  148512 requests in 5.00s, 12.34MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  29702.40
Transfer/sec:      2.47MB
";
        let r = parse(text).unwrap();
        assert_eq!(r.requests, 148_512);
        assert_eq!(r.requests_per_sec, 29_702.4);
        assert_eq!(r.p50_us, 870.0);
        assert_eq!(r.p99_us, 2100.0);
        assert_eq!(r.non_2xx, 12);
        assert_eq!(r.socket_errors, 3);
    }
}
