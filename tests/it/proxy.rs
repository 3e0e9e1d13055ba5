//! Corporate networks: a real egress proxy (tinyproxy from Debian) between the collector and the
//! simulators, proxy credentials, and an API served over HTTPS by a test CA (`ca_file`).
//!
//! tinyproxy runs in the foreground with its own configuration on a free loopback port and logs
//! every request it forwards (`Request (file descriptor N): GET http://...`, or `CONNECT
//! host:port` for a tunnel), so the tests count from the proxy's own log what went through it.
//! tinyproxy is required: without it the tests fail (never skip) and say
//! `apt-get install tinyproxy`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use isolation_sim::{Dataset, SimHandle};
use tempfile::TempDir;

use crate::rsyslog::Pki;
use crate::support::*;

const INSTALL_HINT: &str = "apt-get install tinyproxy";

/// A running tinyproxy.
struct Tinyproxy {
    _dir: TempDir,
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Tinyproxy {
    /// Starts tinyproxy on a free loopback port; with `auth`, it demands those Basic credentials.
    async fn start(auth: Option<(&str, &str)>) -> Tinyproxy {
        let dir = TempDir::new().unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{log}\"\nLogLevel Connect\n\
             PidFile \"{pid}\"\nMaxClients 50\nAllow 127.0.0.1\n",
            log = log.display(),
            pid = dir.path().join("tinyproxy.pid").display(),
        );
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.path().join("tinyproxy.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tinyproxy ({e}); `{INSTALL_HINT}`"));
        let mut proxy = Tinyproxy {
            _dir: dir,
            port,
            log,
            child,
        };
        proxy.wait_listening().await;
        proxy
    }

    async fn wait_listening(&mut self) {
        let log = self.log.clone();
        wait_until_listening(
            "tinyproxy",
            &mut self.child,
            self.port,
            Duration::from_secs(10),
            || format!("log:\n{}\n(`{INSTALL_HINT}`)", read_log(&log)),
        )
        .await;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests the proxy forwarded to the simulator's usage-data path (plain http).
    fn gets_to(&self, sim: &SimHandle) -> u64 {
        let needle = format!(
            "): GET http://{}/api/v2/reporting/usage-data?",
            sim.local_addr()
        );
        self.log_text().matches(&needle).count() as u64
    }

    /// Tunnels the proxy opened to the simulator (https).
    fn connects_to(&self, sim: &SimHandle) -> u64 {
        let needle = format!("): CONNECT {} HTTP/1.1", sim.local_addr());
        self.log_text().matches(&needle).count() as u64
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        kill_server(&mut self.child);
    }
}

fn assert_all_through_proxy(proxy: &Tinyproxy, env: &TestEnv) {
    for sim in [&env.web, &env.url] {
        let served = sim.stats().requests;
        assert!(served > 0, "no request reached {}", sim.base_url());
        assert_eq!(
            proxy.gets_to(sim),
            served,
            "requests the proxy forwarded to {} vs requests it served; proxy log:\n{}",
            sim.base_url(),
            proxy.log_text()
        );
    }
}

fn route_line(service: &str, route: &str) -> String {
    format!("API connection for {service}: {route}; trusting the built-in roots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_url_carries_every_api_request() {
    let proxy = Tinyproxy::start(None).await;
    let mut env = TestEnv::both(700, |_| {}).await;
    // Many pages, so many requests to count.
    env.service_extra = "page_size: 100".into();
    env.input_extra = format!("    proxy_url: {}\n", proxy.url());
    env.write_config();

    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let via = format!("via proxy {} (from proxy_url)", proxy.url());
    for service in ["browser_and_email_isolation", "url_isolation"] {
        assert!(
            stderr(&out).contains(&route_line(service, &via)),
            "{}",
            describe(&out)
        );
    }

    env.run_once_ok().await;
    env.assert_exactly_once();
    assert_eq!(env.delivered(WEB_TABLE).len(), 700);
    assert_eq!(env.delivered(URL_TABLE).len(), 700);
    assert_all_through_proxy(&proxy, &env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_come_from_the_environment_and_are_never_shown() {
    const PASSWORD: &str = "Pr0xy-pa55word-7e1d";
    let proxy = Tinyproxy::start(Some(("collector", PASSWORD))).await;
    let mut env = TestEnv::both(300, |_| {}).await;
    env.input_extra = format!(
        "    proxy_url: http://${{PROXY_USER}}:${{PROXY_PASSWORD}}@127.0.0.1:{}\n",
        proxy.port
    );
    env.write_config();
    let good = [("PROXY_USER", "collector"), ("PROXY_PASSWORD", PASSWORD)];
    let mut outputs = vec![env.collector_with_env(&["validate"], &good).await];
    assert!(outputs[0].status.success(), "{}", describe(&outputs[0]));
    let out = env.collector_with_env(&["run", "--once"], &good).await;
    assert!(out.status.success(), "{}", describe(&out));
    outputs.push(out);
    env.assert_exactly_once();
    assert_all_through_proxy(&proxy, &env);

    // A wrong password: the proxy refuses (tinyproxy: 401 with its own Basic challenge); the
    // collector names the proxy, not the API key, and stops.
    let served = env.web.stats().requests + env.url.stats().requests;
    let bad = [
        ("PROXY_USER", "collector"),
        ("PROXY_PASSWORD", "wrong-Pa55word"),
    ];
    let out = env.collector_with_env(&["run", "--once"], &bad).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let want = format!(
        "the proxy {} refused the request without valid proxy credentials (HTTP 401)",
        proxy.url()
    );
    assert!(stderr(&out).contains(&want), "{}", describe(&out));
    assert_eq!(
        env.web.stats().requests + env.url.stats().requests,
        served,
        "nothing reached the API"
    );
    outputs.push(out);
    for out in &outputs {
        for text in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(text);
            assert!(
                !text.contains(PASSWORD),
                "the proxy password was shown:\n{text}"
            );
            assert!(!text.contains("wrong-Pa55word"), "{text}");
            assert!(!text.contains(KEY), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_tunnels_to_an_https_api() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let proxy = Tinyproxy::start(None).await;
    let web = sim_config(Dataset::Web, 400, 1);
    let url = sim_config(Dataset::Url, 400, 2);
    let mut env = TestEnv::start_tls(web, url, &pki.server).await;
    env.input_extra = format!("    ca_file: {}\n", pki.ca.pem.display());
    env.write_config();
    let vars = [("HTTPS_PROXY", proxy.url())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let out = env.collector_with_env(&["validate"], &vars).await;
    assert!(out.status.success(), "{}", describe(&out));
    let want = format!(
        "API connection for url_isolation: via proxy {} (from HTTPS_PROXY); trusting the built-in roots + ca_file {}",
        proxy.url(),
        pki.ca.pem.display()
    );
    assert!(stderr(&out).contains(&want), "{}", describe(&out));

    let out = env.collector_with_env(&["run", "--once"], &vars).await;
    assert!(out.status.success(), "{}", describe(&out));
    env.assert_exactly_once();
    for sim in [&env.web, &env.url] {
        assert!(
            proxy.connects_to(sim) >= 2,
            "validate and run each tunnel to {}; proxy log:\n{}",
            sim.base_url(),
            proxy.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_api_certificate_fails_clearly_until_ca_file_is_set() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let web = sim_config(Dataset::Web, 500, 1);
    let url = sim_config(Dataset::Url, 500, 2);
    let mut env = TestEnv::start_tls(web, url, &pki.server).await;

    let out = env.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    for service in [&env.web, &env.url] {
        let want = format!(
            "TLS with {} failed: invalid peer certificate: UnknownIssuer; the server's certificate is not trusted by the built-in roots. If a proxy inspects TLS, set ca_file to your proxy's CA bundle (PEM), or system_trust_store: true",
            service.base_url()
        );
        assert!(err.contains(&want), "{}", describe(&out));
        assert_eq!(service.stats().requests, 0, "no request got through TLS");
    }
    assert!(!err.contains(KEY), "{err}");
    assert!(env.delivered(WEB_TABLE).is_empty() && env.delivered(URL_TABLE).is_empty());

    env.input_extra = format!("    ca_file: {}\n", pki.ca.pem.display());
    env.write_config();
    env.run_once_ok().await;
    env.assert_exactly_once();
    assert_eq!(env.delivered(WEB_TABLE).len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_is_named() {
    let mut env = TestEnv::both(10, |_| {}).await;
    let port = free_port();
    env.input_extra = format!("    proxy_url: http://user:Secret-Pa55@127.0.0.1:{port}\n");
    env.write_config();
    let out = env.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    let want = format!("connection failed (via proxy http://127.0.0.1:{port}): ");
    assert!(err.contains(&want), "{}", describe(&out));
    assert!(!err.contains("Secret-Pa55"), "{err}");
    assert_eq!(env.web.stats().requests + env.url.stats().requests, 0);
}

/// A proxy that wants credentials the collector lacks: 407, to the forwarded request (http API)
/// and to the CONNECT of a tunnel (https API), named as the proxy's refusal, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_credentials_is_named_for_forwarded_and_tunnelled_requests() {
    let proxy = Tinyproxy::start(Some(("collector", "Pr0xy-pa55word-7e1d"))).await;
    let want = format!(
        "the proxy {} refused the request without valid proxy credentials (HTTP 407)",
        proxy.url()
    );

    let mut plain = TestEnv::both(10, |_| {}).await;
    plain.input_extra = format!("    proxy_url: {}\n", proxy.url());
    plain.write_config();
    let out = plain.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains(&want), "{}", describe(&out));
    assert!(!stderr(&out).contains("retry"), "{}", describe(&out));

    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let web = sim_config(Dataset::Web, 10, 1);
    let url = sim_config(Dataset::Url, 10, 2);
    let mut tls = TestEnv::start_tls(web, url, &pki.server).await;
    tls.input_extra = format!("    ca_file: {}\n", pki.ca.pem.display());
    tls.write_config();
    let out = tls
        .collector_with_env(&["run", "--once"], &[("HTTPS_PROXY", &proxy.url())])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains(&want), "{}", describe(&out));
    assert!(!stderr(&out).contains("retry"), "{}", describe(&out));
    for sim in [&plain.web, &plain.url, &tls.web, &tls.url] {
        assert_eq!(
            sim.stats().requests,
            0,
            "nothing reached {}",
            sim.base_url()
        );
    }
}
