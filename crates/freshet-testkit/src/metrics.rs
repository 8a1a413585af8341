//! Reading a service's Prometheus `/metrics` endpoint in tests.

/// The text of the Prometheus endpoint at `address` (`host:port`), path `/metrics`; empty
/// when nothing listens (yet), so callers can poll until the metric they want appears.
pub fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut body);
    }
    body
}

/// The value of one series in a scrape, named exactly as printed: the metric name alone,
/// or with its labels (`name{a="x",b="y"}`).
pub fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum over every series of metric `name` (all label values), or `None` when the
/// scrape has no series of it.
pub fn sum(scrape: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_are_matched_whole_with_their_labels() {
        let text = "# HELP x y\nreq_count{a=\"1\"} 3\nreq_count{a=\"10\"} 7\nreq 2.5\n";
        assert_eq!(super::value(text, "req_count{a=\"1\"}"), Some(3.0));
        assert_eq!(super::value(text, "req_count{a=\"10\"}"), Some(7.0));
        assert_eq!(super::value(text, "req"), Some(2.5));
        assert_eq!(super::value(text, "req_count"), None);
        assert_eq!(super::sum(text, "req_count"), Some(10.0));
        assert_eq!(super::sum(text, "req"), Some(2.5));
        assert_eq!(super::sum(text, "other"), None);
    }
}
