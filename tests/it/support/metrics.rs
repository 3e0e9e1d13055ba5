//! The metrics listener from outside: a free loopback port for it, HTTP GETs of `/metrics`,
//! `/ready` and `/health`, and the text exposition parsed into samples.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::{TestEnv, Wait};

/// A loopback port that was free a moment ago (bound then released), for a server a test
/// starts (rsyslogd, a daemon's listener). Drawn at random below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999 here): a port the kernel hands out for port 0
/// is also the kind it picks as the source port of any outgoing connection (chromium's, a
/// client's), which can take it before the server binds it; it then answers in another
/// protocol (a TLS handshake that read "corrupt message of type InvalidContentType").
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether something accepts connections on the loopback `port` (tried for at most 100 ms).
pub fn listening(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// Adds `metrics_listen` to the env's config; returns the base URL.
pub fn listen_on_free_port(env: &TestEnv) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "  name: it\n",
        &format!("  name: it\n  metrics_listen: \"{addr}\"\n"),
    );
    std::fs::write(env.config_path(), text).unwrap();
    format!("http://{addr}")
}

/// GET `url`: (status, body); `None` while nothing answers. (Never through a proxy that the
/// CI environment may set: the listener is on 127.0.0.1.)
pub async fn get(url: &str) -> Option<(u16, String)> {
    get_from(reqwest::Client::builder().no_proxy(), url).await
}

/// [`get`], giving up (`None`) after `limit`: a paused process accepts and never answers.
pub async fn get_within(url: &str, limit: Duration) -> Option<(u16, String)> {
    get_from(reqwest::Client::builder().no_proxy().timeout(limit), url).await
}

async fn get_from(http: reqwest::ClientBuilder, url: &str) -> Option<(u16, String)> {
    let resp = http.build().ok()?.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The value of one series (`name{labels}` exactly as exposed) in a text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series))
        .and_then(|(_, v)| v.parse().ok())
}

/// The samples of a text exposition: (name, labels) → value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse_exposition(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        samples.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    samples
}

/// The value of one series; `None` when the exposition has no such series (a counter with
/// labels appears at its first increment, so a poll may see it missing for a while).
pub fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

/// The value of one series that must exist: a missing series fails the test (it is not 0, or
/// `== 0` would pass for a metric that was renamed or never registered).
pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(samples, name, labels).unwrap_or_else(|| {
        let exposed: Vec<_> = samples.keys().collect();
        panic!("no series {name} {labels:?}; the exposition has {exposed:#?}")
    })
}

/// `GET {base}/metrics`, which must answer 200.
pub async fn scrape(base: &str) -> Samples {
    let (status, text) = get(&format!("{base}/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200, "{text}");
    parse_exposition(&text)
}

/// Scrapes until `f` holds (the daemon keeps working between the truth and the scrape), at
/// most 30 s.
pub async fn scrape_until(base: &str, what: &str, f: impl FnMut(&Samples) -> bool) -> Samples {
    scrape_until_within(base, what, Duration::from_secs(30), f).await
}

/// [`scrape_until`] with a limit of its own.
pub async fn scrape_until_within(
    base: &str,
    what: &str,
    limit: Duration,
    mut f: impl FnMut(&Samples) -> bool,
) -> Samples {
    Wait::new(what, limit)
        .every(Duration::from_millis(200))
        .until_async(async || {
            let samples = scrape(base).await;
            match f(&samples) {
                true => Ok(samples),
                false => Err(format!("{samples:#?}")),
            }
        })
        .await
}
