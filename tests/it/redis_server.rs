//! A real `redis-server` (Debian's package) started per test on a free loopback port, with its own
//! data directory. It persists with an append-only file fsynced at every write, so a `kill -9` and
//! a restart keep everything a client was told was written, as a production Redis with AOF does.
//!
//! Used by the high-availability tests (Redis persistence, leases, failover).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::{free_port, kill_server, read_log, wait_until_listening};

const INSTALL_HINT: &str = "apt-get install redis-server";

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    pub password: Option<String>,
    pub dir: PathBuf,
    /// The master's port, for a replica (`--replicaof 127.0.0.1 <port>`).
    replica_of: Option<u16>,
    /// Appends every write to a file fsynced at once (the default); without it, a restart comes
    /// back empty, as a Redis run without persistence does.
    pub persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a Redis without a password in a fresh subdirectory `name` of `tmp`.
    pub async fn start(tmp: &TempDir, name: &str) -> RedisServer {
        RedisServer::start_with_password(tmp, name, None).await
    }

    /// Starts a Redis without persistence (no append-only file, no RDB save points): a
    /// [`Self::restart`] comes back empty.
    pub async fn start_without_persistence(tmp: &TempDir, name: &str) -> RedisServer {
        let mut r = RedisServer::unstarted(tmp, name, free_port());
        r.persistent = false;
        r.spawn().await;
        r
    }

    /// Starts a Redis that requires `password` (the `default` user's, `requirepass`).
    pub async fn start_with_password(
        tmp: &TempDir,
        name: &str,
        password: Option<&str>,
    ) -> RedisServer {
        RedisServer::start_on_port(tmp, name, password, free_port()).await
    }

    /// Starts a Redis on `port`: a test that starts the collector before Redis reserves the
    /// port first (see [`persistence_yaml`]).
    pub async fn start_on_port(
        tmp: &TempDir,
        name: &str,
        password: Option<&str>,
        port: u16,
    ) -> RedisServer {
        let mut r = RedisServer::unstarted(tmp, name, port);
        r.password = password.map(str::to_owned);
        r.spawn().await;
        r
    }

    /// Starts a replica of the server on `master_port` (loopback), without a password.
    pub async fn start_replica_of(tmp: &TempDir, name: &str, master_port: u16) -> RedisServer {
        let mut r = RedisServer::unstarted(tmp, name, free_port());
        r.replica_of = Some(master_port);
        r.spawn().await;
        r
    }

    /// A persistent server without a password on `port`, in a fresh subdirectory `name` of
    /// `tmp`, not started yet.
    fn unstarted(tmp: &TempDir, name: &str, port: u16) -> RedisServer {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        RedisServer {
            port,
            password: None,
            dir,
            replica_of: None,
            persistent: true,
            child: None,
        }
    }

    /// The process id of the running server (to SIGSTOP it, say).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// `host:port`.
    /// The in-process store's config for this server: no password, database 0, plain TCP.
    pub fn config(
        &self,
        key_prefix: &str,
        lease_ttl: Duration,
    ) -> isolation_collector::config::RedisConfig {
        isolation_collector::config::RedisConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            password: None,
            username: None,
            db: 0,
            tls: false,
            ca: None,
            key_prefix: key_prefix.into(),
            lease_ttl,
            unpulled_after: None,
            sentinel: None,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `globals.persistence` block (indented for `globals:`) pointing at this server, with
    /// `lease_ttl_in_seconds: ttl` and any `extra` lines of `config:` (indented by the caller).
    pub fn persistence_yaml(&self, ttl: u32, extra: &str) -> String {
        persistence_yaml(self.port, self.password.as_deref(), ttl, extra)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""])
            .args(match self.persistent {
                true => &["--appendonly", "yes", "--appendfsync", "always"][..],
                false => &["--appendonly", "no"][..],
            })
            .args(["--protected-mode", "no", "--daemonize", "no"])
            // A replica's first sync at once, not after the default 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        if let Some(master) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); `{INSTALL_HINT}`"));
        self.child = Some(child);
        self.wait_until_listening().await;
    }

    async fn wait_until_listening(&mut self) {
        let log = self.dir.join("redis.log");
        wait_until_listening(
            "redis-server",
            self.child.as_mut().unwrap(),
            self.port,
            Duration::from_secs(10),
            || format!("log:\n{}", read_log(&log)),
        )
        .await;
    }

    /// SIGKILL (`kill -9`) and reap: the server is down until [`RedisServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_server(&mut child);
        }
    }

    /// Starts the server again on the same port and data directory (the AOF is replayed).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs `redis-cli` against this server with `args`, returning its stdout (trimmed).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--no-raw"]);
        if let Some(p) = &self.password {
            // REDISCLI_AUTH keeps the password off the command line (ps).
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `GET key` as the stored bytes (`redis-cli --raw`); `None` for a missing key.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.args(["GET", key]).output().expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli GET {key} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        // --raw prints the value and a newline, and only the newline for a missing key.
        let value = text.strip_suffix('\n').unwrap_or(&text);
        (!value.is_empty()).then(|| value.to_owned())
    }
}

/// The `globals.persistence` block (indented for `globals:`) for a Redis on `port` (running or
/// not yet), with `lease_ttl_in_seconds: ttl` and any `extra` lines of `config:` (indented by
/// the caller).
pub fn persistence_yaml(port: u16, password: Option<&str>, ttl: u32, extra: &str) -> String {
    let password = password.map_or(String::new(), |p| format!("      password: \"{p}\"\n"));
    format!(
        "  persistence:\n    type: redis\n    config:\n      host: 127.0.0.1\n      port: {port}\n{password}      db: 0\n      lease_ttl_in_seconds: {ttl}\n{extra}"
    )
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The harness itself: a server starts, answers, keeps a key across `kill -9` and a restart (the
/// append-only file), and refuses a client without the password.
#[tokio::test]
async fn a_redis_server_keeps_its_keys_across_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = RedisServer::start(&tmp, "redis").await;
    assert_eq!(r.cli(&["SET", "k", "v"]), "OK");
    r.restart().await;
    assert_eq!(r.cli(&["GET", "k"]), "\"v\"");
    let locked = RedisServer::start_with_password(&tmp, "locked", Some("s3cret")).await;
    assert_eq!(locked.cli(&["PING"]), "PONG");
    let out = Command::new("redis-cli")
        .args(["-p", &locked.port.to_string(), "PING"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOAUTH"),
        "{out:?}"
    );
}
