//! How the store reaches the Redis master: the one place that makes a connection, for every
//! connection the store keeps.
//!
//! Either one server (`host`, `port`), or the master that Redis Sentinel names
//! (`sentinels`, `master_name`), through the redis crate's own Sentinel client: it asks the
//! sentinels in the config's order for the master's address and checks with `ROLE` that the
//! server there is a master. Every new connection asks again, and the store makes a new
//! connection after any error, so the first operation after a failover finds the new master
//! (until the sentinels have promoted a replica, the old master's address fails, and that is an
//! outage like any other). The master's password, username, database and TLS settings apply to
//! whichever server is the master; the sentinels have their own password and username.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, RedisConnectionInfo, RedisError,
    RedisResult, TlsCertificates, TlsMode,
};
use tracing::info;

use crate::config::{RedisConfig, SentinelConfig};
use crate::state::{RedisCause, StateError};

/// Makes connections to the current master.
pub struct Connector {
    target: Target,
    /// Connect and response timeout of a connection, and the bound of a sentinel lookup.
    timeout: Duration,
    /// The master the sentinels named last (`host:port`), to log a change once.
    master: Mutex<Option<String>>,
}

enum Target {
    Server(Client),
    Sentinels {
        /// The crate's client keeps a connection to the sentinels between lookups.
        client: tokio::sync::Mutex<SentinelClient>,
        master_name: String,
    },
}

impl Connector {
    /// A connector for `config`, with `timeout` for connecting and each response. Fails only on
    /// a CA file that cannot be read or settings the crate refuses.
    pub fn new(config: &RedisConfig, timeout: Duration) -> Result<Connector, StateError> {
        let address = config.address();
        let refused = |reason: RedisCause, fix: &'static str| StateError::Refused {
            address: address.clone(),
            reason,
            fix,
        };
        let ca = match &config.ca {
            None => None,
            Some(ca) => Some(std::fs::read(ca).map_err(|source| {
                let path = ca.clone();
                let cause = RedisCause::ReadCa { path, source };
                refused(cause, "check globals.persistence.config.ca")
            })?),
        };
        let target = match &config.sentinel {
            None => server(config, ca).map(Target::Server),
            Some(s) => sentinels(config, s, ca).map(|client| Target::Sentinels {
                client: tokio::sync::Mutex::new(client),
                master_name: s.master_name.clone(),
            }),
        };
        Ok(Connector {
            target: target.map_err(|e| {
                refused(
                    e.into(),
                    "check globals.persistence.config (host or sentinels, tls and ca)",
                )
            })?,
            timeout,
            master: Mutex::new(None),
        })
    }

    /// A new connection to the current master (with sentinels: the one they name now).
    pub async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match &self.target {
            Target::Server(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&settings)
                    .await
            }
            Target::Sentinels {
                client,
                master_name,
            } => {
                let master = self.ask_sentinels(client).await?;
                self.found(master_name, master.get_connection_info().addr().to_string());
                master
                    .get_multiplexed_async_connection_with_config(&settings)
                    .await
            }
        }
    }

    /// The master's client, as the sentinels name it now; bounded by the timeout (a sentinel
    /// that does not answer would otherwise hold the lookup).
    async fn ask_sentinels(
        &self,
        client: &tokio::sync::Mutex<SentinelClient>,
    ) -> RedisResult<Client> {
        let lookup = async { client.lock().await.async_get_client().await };
        tokio::time::timeout(self.timeout, lookup)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from((
                    ErrorKind::Io,
                    "the sentinels did not name a reachable master in time",
                )))
            })
    }

    /// The sentinels named `address` as the master: logged when it is new to this process.
    fn found(&self, master_name: &str, address: String) {
        let mut last = super::lock(&self.master);
        if last.as_deref() != Some(address.as_str()) {
            match last.as_deref() {
                None => info!("The sentinels name {address} as the Redis master `{master_name}`."),
                Some(old) => info!(
                    "The sentinels name {address} as the Redis master `{master_name}` (it was {old}): a failover happened; the collector follows it."
                ),
            }
            *last = Some(address);
        }
    }

    /// The master the sentinels named last (`None` without sentinels, or before a lookup).
    pub fn master(&self) -> Option<String> {
        super::lock(&self.master).clone()
    }
}

/// The master's settings: database, username, password.
fn master_settings(config: &RedisConfig) -> RedisConnectionInfo {
    let mut settings = RedisConnectionInfo::default().set_db(config.db);
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    settings
}

/// `host:port` as an address of the crate, with TLS when `tls`.
fn addr(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}

fn certificates(pem: Vec<u8>) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }
}

/// One server, `host` and `port`.
fn server(config: &RedisConfig, ca: Option<Vec<u8>>) -> RedisResult<Client> {
    let info = redis::IntoConnectionInfo::into_connection_info(addr(
        &config.host,
        config.port,
        config.tls,
    ))?
    .set_redis_settings(master_settings(config));
    match ca {
        None => Client::open(info),
        Some(pem) => Client::build_with_tls(info, certificates(pem)),
    }
}

/// The sentinels' client for the master `s.master_name`.
fn sentinels(
    config: &RedisConfig,
    s: &SentinelConfig,
    ca: Option<Vec<u8>>,
) -> RedisResult<SentinelClient> {
    let addrs = s.sentinels.iter().map(|(h, p)| addr(h, *p, config.tls));
    let mut b = SentinelClientBuilder::new(addrs, &s.master_name, SentinelServerType::Master)?
        .set_client_to_redis_db(config.db);
    if let Some(user) = &config.username {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(password) = &config.password {
        b = b.set_client_to_redis_password(password.expose());
    }
    if let Some(user) = &s.username {
        b = b.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &s.password {
        b = b.set_client_to_sentinel_password(password.expose());
    }
    if config.tls {
        b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(pem) = ca {
            b = b
                .set_client_to_redis_certificates(certificates(pem.clone()))
                .set_client_to_sentinel_certificates(certificates(pem));
        }
    }
    b.build()
}
