//! A whole Switchboard cluster made of real processes, one per test function: a fresh Postgres
//! database, a private `redis-server`, the three gRPC services and two gateway nodes. The
//! contract suite (`tests/contract/*.test.mjs`, run by `node --test`) then drives it with the real
//! npm `socket.io-client`, senders and receivers on different nodes.
//!
//! Every process is a child of the test, so a node can be killed for real (`SIGKILL` from the
//! suite) and Redis restarted without disturbing other tests. Everything is killed when the
//! [`Cluster`] is dropped, panics included; on failure the tail of each process's log is printed
//! and the logs are kept under `std::env::temp_dir()/sb-<uuid>/`.
//!
//! A fault test can also have some processes reach Redis or Postgres through a TCP proxy that
//! the suite cuts and restores ([`proxy`], [`Cluster::start_with_proxies`]): a partition of one
//! process, where restarting Redis or Postgres would disturb all of them.

pub mod otlp;
pub mod proxy;

use std::{
    fs::{self, File},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use proxy::Proxy;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghij";
pub const SESSION_SECRET: &str = "test-session-secret-0123456789abcdefgh";
pub const ALLOWED_ORIGIN: &str = "http://allowed.example";

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// An upper bound for one `node --test` run, so that a hung suite cannot hang `cargo test`.
const SUITE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const LOG_TAIL_LINES: usize = 80;

/// One child process and the file its stdout and stderr go to.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A gateway node as the suite sees it.
pub struct Gateway {
    pub url: String,
    pub pid: u32,
}

/// A running cluster; dropping it kills every process it started.
pub struct Cluster {
    test: String,
    dir: PathBuf,
    procs: Vec<Proc>,
    base_database_url: String,
    database_url: Option<String>,
    redis_bin: String,
    redis_port: u16,
    rust_log: String,
    files: Files,
    /// What the suite is told besides the defaults (`SB_*`): the extra gateway settings of
    /// [`Cluster::start_with_env`] (as `SB_<name without SWITCHBOARD_>`), the gateway binary,
    /// the services' and Redis' URLs, the proxies' control ports.
    suite_env: Vec<(String, String)>,
    /// The fault-injection proxies of [`Cluster::start_with_proxies`]; dropped (stopped) after
    /// the processes are killed.
    proxies: Vec<Proxy>,
    pub gateways: Vec<Gateway>,
}

/// Which connections of a cluster go through a fault-injection [`Proxy`], so the suite can cut
/// them (and only them) and restore them through the proxy's control port, which it is told as
/// an `SB_*_PROXY_CONTROL` variable. Nothing goes through a proxy by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proxies {
    /// Gateway node gw-b's Redis connections (gw-a and the services reach Redis directly):
    /// `SB_GW_B_REDIS_PROXY_CONTROL`.
    pub gateway_b_redis: bool,
    /// The membership and messages services' Postgres connections (the migrations, the presence
    /// service and the suite's own queries go directly): `SB_POSTGRES_PROXY_CONTROL`.
    pub postgres: bool,
    /// A load balancer in front of both gateway nodes, for clients that should land on any node
    /// and fail over to the other: `SB_BALANCER_URL`.
    pub balancer: bool,
}

thread_local! {
    /// Environment every process of the cluster being started gets (see
    /// [`Cluster::start_traced`]); each test function runs on its own thread.
    static PROCESS_ENV: std::cell::RefCell<Vec<(String, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a cluster's gateways keep uploaded files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// A local folder both nodes share (the default backend).
    Folder,
    /// A bucket of a private `moto_server` (the S3 backend, against a real S3 API).
    S3,
}

const S3_BUCKET: &str = "sb-files";

/// `.local/venv-moto/bin/moto_server` of the repository (`scripts/ensure-moto.sh` installs it).
fn default_moto_server() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.local/venv-moto/bin/moto_server")
        .display()
        .to_string()
}

/// `target/<profile>/<name>`: the workspace binaries sit next to the gateway's.
fn workspace_bin(name: &str) -> PathBuf {
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_gateway"));
    let path = if name == "gateway" {
        gateway
    } else {
        gateway
            .parent()
            .expect("the gateway binary has a parent directory")
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    };
    assert!(
        path.is_file(),
        "binary `{name}` is missing at {}: run `cargo build --workspace --bins` first (the Makefile does)",
        path.display()
    );
    path
}

fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => default.to_string(),
    }
}

/// A port that was free a moment ago: bind port 0, read it, let it go.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The last `n` lines of a file, or a note saying why there are none.
fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            if lines.is_empty() {
                "(empty)".to_string()
            } else {
                lines[start..].join("\n")
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `GET path` over plain HTTP/1.1; the status code, if anything answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_request(port, "GET", path)
}

/// `METHOD path` (no body) over plain HTTP/1.1; the status code, if anything answered.
fn http_request(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => read += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..read]).to_string();
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

/// Sends one inline Redis command and answers the first line of the reply.
fn redis_command(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr(port), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 128];
    let k = stream.read(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(&buf[..k])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    )
}

/// Where the `host[:port]` of a `postgres://[user[:password]@]host[:port]/…` URL is in it, and
/// the address it names (port 5432 when none is given).
fn database_host(url: &str) -> (std::ops::Range<usize>, SocketAddr) {
    let unsupported = || -> ! {
        panic!("cannot proxy the database URL {url:?}: expected postgres://[user@]host[:port]/name")
    };
    let start = url
        .find("://")
        .map(|i| i + 3)
        .unwrap_or_else(|| unsupported());
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    let host_port = &url[start..end];
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            (host, port.parse().unwrap_or_else(|_| unsupported()))
        }
        _ => (host_port, 5432),
    };
    let host = match host.trim_start_matches('[').trim_end_matches(']') {
        "" => "localhost",
        h => h,
    };
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| unsupported());
    (start..end, upstream)
}

/// The database name in a `postgres://…/<name>?…` URL.
fn database_name(url: &str) -> Option<&str> {
    let without_query = url.split('?').next()?;
    let name = without_query.rsplit('/').next()?;
    (!name.is_empty() && !name.contains(':') && !name.contains('@')).then_some(name)
}

impl Cluster {
    /// Starts a complete cluster for the test function `test`, waiting until every part is ready.
    pub fn start(test: &str) -> Cluster {
        Cluster::start_with(test, Files::Folder)
    }

    /// The folder of this cluster's logs and files (`SB_TEMP_DIR` of the suite).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a cluster whose gateways keep uploads in `files`.
    pub fn start_with(test: &str, files: Files) -> Cluster {
        Cluster::start_with_env(test, files, &[], None)
    }

    /// Starts a cluster every process of which exports its spans to `otlp_endpoint` (quickly:
    /// a 100 ms export delay), at the harness's usual `RUST_LOG` (`warn`).
    pub fn start_traced(test: &str, otlp_endpoint: &str) -> Cluster {
        PROCESS_ENV.with(|env| {
            *env.borrow_mut() = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp_endpoint.into()),
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ];
        });
        let cluster = Cluster::start(test);
        PROCESS_ENV.with(|env| env.borrow_mut().clear());
        cluster
    }

    /// Starts a cluster some connections of which go through fault-injection proxies.
    pub fn start_with_proxies(test: &str, proxies: Proxies) -> Cluster {
        Cluster::start_full(test, Files::Folder, &[], None, proxies)
    }

    /// Starts a cluster whose two gateway nodes also get `gateway_env` (`SWITCHBOARD_*`
    /// settings, overriding the harness's own) and, when given, their own `RUST_LOG`
    /// (`SWITCHBOARD_TEST_RUST_LOG` or `warn` otherwise, as every other process). The suite
    /// sees each `SWITCHBOARD_<NAME>=value` as `SB_<NAME>=value`.
    pub fn start_with_env(
        test: &str,
        files: Files,
        gateway_env: &[(&str, &str)],
        gateway_rust_log: Option<&str>,
    ) -> Cluster {
        Cluster::start_full(
            test,
            files,
            gateway_env,
            gateway_rust_log,
            Proxies::default(),
        )
    }

    /// The constructor every other one calls: gateway settings (see
    /// [`Cluster::start_with_env`]) and proxies (see [`Cluster::start_with_proxies`]) together.
    pub fn start_full(
        test: &str,
        files: Files,
        gateway_env: &[(&str, &str)],
        gateway_rust_log: Option<&str>,
        proxies: Proxies,
    ) -> Cluster {
        // Fail fast, before anything is started, when the workspace binaries were not built.
        let gateway_bin = workspace_bin("gateway");
        let membership_bin = workspace_bin("membership");
        let messages_bin = workspace_bin("messages");
        let presence_bin = workspace_bin("presence");
        workspace_bin("switchboard-migrate");

        let dir = std::env::temp_dir().join(format!("sb-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));

        let mut cluster = Cluster {
            test: test.to_string(),
            dir,
            procs: Vec::new(),
            base_database_url: env_or("SWITCHBOARD_TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
            database_url: None,
            redis_bin: env_or("SWITCHBOARD_TEST_REDIS_SERVER", "redis-server"),
            redis_port: free_port(),
            rust_log: env_or("SWITCHBOARD_TEST_RUST_LOG", "warn"),
            files: Files::Folder,
            suite_env: Vec::new(),
            proxies: Vec::new(),
            gateways: Vec::new(),
        };
        eprintln!("[{test}] cluster files in {}", cluster.dir.display());

        // Postgres: a fresh, migrated database.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let database_url = runtime
            .block_on(switchboard_migrate::create_test_database(&cluster.base_database_url))
            .unwrap_or_else(|e| {
                panic!(
                    "creating a test database next to {} (set SWITCHBOARD_TEST_DATABASE_URL): {e:#}",
                    switchboard_migrate::redact(&cluster.base_database_url)
                )
            });
        cluster.database_url = Some(database_url.clone());

        // Redis: a private server, so restarting it disturbs no other test.
        let redis_port = cluster.redis_port;
        let redis_bin = cluster.redis_bin.clone();
        let port_arg = redis_port.to_string();
        cluster.spawn(
            "redis",
            Path::new(&redis_bin),
            &[
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            &[],
        );
        cluster.wait_until("redis", || {
            redis_command(redis_port, "PING").is_some_and(|l| l == "+PONG")
        });
        let redis_url = format!("redis://127.0.0.1:{redis_port}");

        // The services that use Postgres reach it through a proxy when asked to.
        let mut services_database_url = database_url.clone();
        if proxies.postgres {
            let (host, upstream) = database_host(&database_url);
            let proxy = Proxy::start(&format!("{test}/postgres"), upstream);
            services_database_url.replace_range(host, &format!("127.0.0.1:{}", proxy.port));
            cluster.add_proxy(proxy, "SB_POSTGRES_PROXY_CONTROL");
        }

        // The gRPC services.
        let common = [("SWITCHBOARD_REDIS_URL", redis_url.clone())];
        let mut service_ports = Vec::new();
        for (name, bin) in [
            ("membership", &membership_bin),
            ("messages", &messages_bin),
            ("presence", &presence_bin),
        ] {
            let port = free_port();
            let mut env = vec![("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))];
            env.extend(common.iter().cloned());
            let db_url = if name == "presence" {
                &database_url
            } else {
                &services_database_url
            };
            env.push(("SWITCHBOARD_DATABASE_URL", db_url.clone()));
            if name == "presence" {
                env.push(("SWITCHBOARD_PRESENCE_TTL_MS", "2000".to_string()));
                env.push(("SWITCHBOARD_PRESENCE_THROTTLE_MS", "2000".to_string()));
                env.push(("SWITCHBOARD_TYPING_TTL_MS", "3000".to_string()));
            }
            cluster.spawn(name, bin, &[], &env);
            service_ports.push((name, port));
        }
        for (name, port) in &service_ports {
            let port = *port;
            cluster.wait_until(name, || {
                TcpStream::connect_timeout(&addr(port), Duration::from_millis(300)).is_ok()
            });
        }
        let service_url = |wanted: &str| {
            let port = service_ports
                .iter()
                .find(|(n, _)| *n == wanted)
                .map(|(_, p)| *p)
                .expect("service port");
            format!("http://127.0.0.1:{port}")
        };

        // The files store: a folder both nodes share, or a bucket of a private S3 server.
        let files_env: Vec<(&str, String)> = match files {
            Files::Folder => vec![(
                "SWITCHBOARD_FILES_URL",
                cluster.dir.join("files").display().to_string(),
            )],
            Files::S3 => {
                let port = free_port();
                let moto = default_moto_server();
                let moto_bin = env_or("SWITCHBOARD_TEST_MOTO_SERVER", &moto);
                let port_arg = port.to_string();
                cluster.spawn(
                    "s3",
                    Path::new(&moto_bin),
                    &["-H", "127.0.0.1", "-p", &port_arg],
                    &[],
                );
                cluster.wait_until("s3", || {
                    TcpStream::connect_timeout(&addr(port), Duration::from_millis(300)).is_ok()
                });
                assert_eq!(
                    http_request(port, "PUT", &format!("/{S3_BUCKET}")),
                    Some(200),
                    "creating the test bucket"
                );
                vec![
                    ("SWITCHBOARD_FILES_URL", format!("s3://{S3_BUCKET}")),
                    (
                        "SWITCHBOARD_FILES_S3_ENDPOINT",
                        format!("http://127.0.0.1:{port}"),
                    ),
                    ("AWS_ACCESS_KEY_ID", "test".to_string()),
                    ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
                    ("AWS_REGION", "us-east-1".to_string()),
                ]
            }
        };
        cluster.files = files;

        // gw-b reaches Redis through a proxy when asked to.
        let mut gateway_b_redis_url = redis_url.clone();
        if proxies.gateway_b_redis {
            let proxy = Proxy::start(&format!("{test}/gw-b-redis"), addr(redis_port));
            gateway_b_redis_url = format!("redis://127.0.0.1:{}", proxy.port);
            cluster.add_proxy(proxy, "SB_GW_B_REDIS_PROXY_CONTROL");
        }

        // Two gateway nodes of one cluster.
        let mut gateway_ports = Vec::new();
        for node in ["gw-a", "gw-b"] {
            let port = free_port();
            let node_redis_url = if node == "gw-b" {
                gateway_b_redis_url.clone()
            } else {
                redis_url.clone()
            };
            let env = vec![
                ("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}")),
                ("SWITCHBOARD_NODE_ID", node.to_string()),
                ("SWITCHBOARD_MEMBERSHIP_URL", service_url("membership")),
                ("SWITCHBOARD_MESSAGES_URL", service_url("messages")),
                ("SWITCHBOARD_PRESENCE_URL", service_url("presence")),
                ("SWITCHBOARD_REDIS_URL", node_redis_url),
                ("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
                ("SWITCHBOARD_JWT_SECRET", JWT_SECRET.to_string()),
                ("SWITCHBOARD_SESSION_SECRET", SESSION_SECRET.to_string()),
                ("SWITCHBOARD_ALLOWED_ORIGINS", ALLOWED_ORIGIN.to_string()),
                ("SWITCHBOARD_PRESENCE_REFRESH_MS", "500".to_string()),
                ("SWITCHBOARD_OUTBOX_REDELIVER_AFTER_MS", "1500".to_string()),
                // The app dialect's presence TTL (the document's variable), as short as the
                // presence service's, so a dead node's app users expire as quickly.
                ("PRESENCE_TTL_SECONDS", "2".to_string()),
            ];
            let mut env = env;
            env.extend(files_env.iter().cloned());
            env.extend(gateway_env.iter().map(|(k, v)| (*k, v.to_string())));
            if let Some(level) = gateway_rust_log {
                env.push(("RUST_LOG", level.to_string()));
            }
            let pid = cluster.spawn(node, &gateway_bin, &[], &env);
            gateway_ports.push((node, port, pid));
        }
        // After the proxies' control ports (`add_proxy`).
        cluster.suite_env.extend(gateway_env.iter().map(|(k, v)| {
            let name = k.strip_prefix("SWITCHBOARD_").unwrap_or(k);
            (format!("SB_{name}"), v.to_string())
        }));
        cluster.suite_env.extend([
            (
                "SB_GATEWAY_BIN".to_string(),
                gateway_bin.display().to_string(),
            ),
            ("SB_MEMBERSHIP_URL".to_string(), service_url("membership")),
            ("SB_MESSAGES_URL".to_string(), service_url("messages")),
            ("SB_PRESENCE_URL".to_string(), service_url("presence")),
            ("SB_REDIS_URL".to_string(), redis_url.clone()),
        ]);
        for (node, port, pid) in &gateway_ports {
            let port = *port;
            cluster.wait_until(node, || http_status(port, "/readyz") == Some(200));
            cluster.gateways.push(Gateway {
                url: format!("http://127.0.0.1:{port}"),
                pid: *pid,
            });
        }
        if proxies.balancer {
            let nodes = gateway_ports
                .iter()
                .map(|(_, port, _)| addr(*port))
                .collect();
            let balancer = Proxy::balance(&format!("{test}/balancer"), nodes);
            cluster.suite_env.push((
                "SB_BALANCER_URL".to_string(),
                format!("http://127.0.0.1:{}", balancer.port),
            ));
            cluster.proxies.push(balancer);
        }
        cluster
    }

    /// Keeps `proxy` running as long as the cluster, its control port told to the suite as `var`.
    fn add_proxy(&mut self, proxy: Proxy, var: &str) {
        self.suite_env
            .push((var.to_string(), proxy.control_port.to_string()));
        self.proxies.push(proxy);
    }

    /// Starts `program` with its output in `<dir>/<name>.log`; answers its pid.
    fn spawn(&mut self, name: &str, program: &Path, args: &[&str], env: &[(&str, String)]) -> u32 {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning a log file handle");
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        PROCESS_ENV.with(|extra| {
            for (key, value) in extra.borrow().iter() {
                command.env(key, value);
            }
        });
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "[{}] starting {name} ({}): {e}",
                self.test,
                program.display()
            )
        });
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        pid
    }

    /// Polls `ready` until it holds, failing when the process `name` exits or 30 s pass.
    fn wait_until(&mut self, name: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready() {
                return;
            }
            if let Some(proc) = self.procs.iter_mut().find(|p| p.name == name)
                && let Ok(Some(status)) = proc.child.try_wait()
            {
                panic!(
                    "[{}] {name} exited ({status}) before it was ready",
                    self.test
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "[{}] {name} was not ready within {READY_TIMEOUT:?}",
                    self.test
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `node --test` on `files` (names in `tests/contract/`) against this cluster, printing
    /// its output, and fails unless every test passed.
    pub fn run_suite(&self, files: &[String]) {
        let contract_dir = contract_dir();
        assert!(
            contract_dir.join("node_modules").is_dir(),
            "{}/node_modules is missing: run `npm ci` in that folder (the Makefile does)",
            contract_dir.display()
        );
        assert!(
            !files.is_empty(),
            "no test files to run in {}",
            contract_dir.display()
        );
        let log_path = self.dir.join("node.log");
        let out = File::create(&log_path).expect("creating node.log");
        let err = out.try_clone().expect("cloning a log file handle");
        let gateways: Vec<&str> = self.gateways.iter().map(|g| g.url.as_str()).collect();
        let pids: Vec<String> = self.gateways.iter().map(|g| g.pid.to_string()).collect();
        let node = env_or("SWITCHBOARD_TEST_NODE", "node");
        let mut child = Command::new(&node)
            .arg("--test")
            .args(concurrency_flag(&node))
            .arg("--test-reporter=spec")
            .args(files)
            .current_dir(&contract_dir)
            .env("SB_GATEWAYS", gateways.join(","))
            .env("SB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SB_JWT_SECRET", JWT_SECRET)
            .env("SB_SESSION_SECRET", SESSION_SECRET)
            .env("SB_ALLOWED_ORIGIN", ALLOWED_ORIGIN)
            .env("SB_GATEWAY_PIDS", pids.join(","))
            .env("SB_REDIS_PORT", self.redis_port.to_string())
            .env("SB_REDIS_SERVER", &self.redis_bin)
            .env(
                "SB_DATABASE_URL",
                self.database_url.as_deref().unwrap_or_default(),
            )
            .env("SB_TEMP_DIR", &self.dir)
            .env(
                "SB_FILES_DIR",
                match self.files {
                    Files::Folder => self.dir.join("files").display().to_string(),
                    Files::S3 => String::new(),
                },
            )
            .env("NO_COLOR", "1")
            .envs(self.suite_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("starting `{node}` (set SWITCHBOARD_TEST_NODE): {e}"));

        // Forward node's output as it comes, so `--nocapture` shows progress.
        let mut output = Forwarder::open(&log_path);
        let deadline = Instant::now() + SUITE_TIMEOUT;
        let status: ExitStatus = loop {
            output.forward();
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    output.forward();
                    panic!(
                        "[{}] the contract suite did not finish within {SUITE_TIMEOUT:?}",
                        self.test
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("waiting for node: {e}"),
            }
        };
        output.forward();
        assert!(
            status.success(),
            "[{}] the contract suite failed ({status}); node's output is above",
            self.test
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = thread::panicking();
        for proc in self.procs.iter_mut().rev() {
            // Some are already gone (the fault suite kills a node); that is fine.
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
        // The fault suite may have restarted Redis as a daemon on our port: stop that one too.
        let _ = redis_command(self.redis_port, "SHUTDOWN NOSAVE");

        if failed {
            for proc in &self.procs {
                eprintln!(
                    "----- [{}] {} ({}), last {LOG_TAIL_LINES} lines -----\n{}",
                    self.test,
                    proc.name,
                    proc.log.display(),
                    tail(&proc.log, LOG_TAIL_LINES)
                );
            }
            eprintln!("[{}] logs kept in {}", self.test, self.dir.display());
            if let Some(url) = &self.database_url {
                eprintln!(
                    "[{}] database kept: {}",
                    self.test,
                    switchboard_migrate::redact(url)
                );
            }
            return;
        }
        if let Some(name) = self.database_url.as_deref().and_then(database_name) {
            drop_database(&self.base_database_url, name);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Prints what a growing log file gained since the last call, never splitting a UTF-8 character.
struct Forwarder {
    file: File,
    pending: Vec<u8>,
}

impl Forwarder {
    fn open(path: &Path) -> Forwarder {
        let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        Forwarder {
            file,
            pending: Vec::new(),
        }
    }

    fn forward(&mut self) {
        if self.file.read_to_end(&mut self.pending).is_err() || self.pending.is_empty() {
            return;
        }
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(text) => text.len(),
            // An incomplete character at the end waits for its remaining bytes.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(valid);
        print!("{}", String::from_utf8_lossy(&self.pending));
        self.pending = rest;
    }
}

/// Best effort: removes a test database once its test passed.
fn drop_database(base_url: &str, name: &str) {
    use sqlx::{Connection, Executor};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        if let Ok(mut conn) = sqlx::PgConnection::connect(base_url).await {
            let _ = conn
                .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                .await;
            let _ = conn.close().await;
        }
    });
}

/// `services/gateway/tests/contract`.
pub fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("contract")
}

/// The `*.test.mjs` files of one folder of `tests/contract/` (a contract's, or `faults`), as
/// paths relative to `tests/contract/`, sorted; `include` filters by file name.
pub fn suite_files(folder: &str, include: impl Fn(&str) -> bool) -> Vec<String> {
    let dir = contract_dir().join(folder);
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs") && include(name))
        .map(|name| format!("{folder}/{name}"))
        .collect();
    files.sort();
    files
}

/// `--test-concurrency=1` where node knows it (20.10+); older test runners (Debian 12's node 18)
/// already run one file at a time on a 2-core machine and refuse the flag.
fn concurrency_flag(node: &str) -> Option<&'static str> {
    let out = Command::new(node).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    (major > 20 || (major == 20 && minor >= 10)).then_some("--test-concurrency=1")
}
