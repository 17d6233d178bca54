//! `switchboard-bench`: measures the inbound webhook path against a bare poem handler in the
//! same run, latency at half that load, and the reply latency of the built-in bot.
//!
//! ```sh
//! cargo run --release -p switchboard-bench -- --seconds 10
//! ```
//!
//! Everything runs on this machine: the load generator (its own thread and runtime, HTTP/1.1
//! keep-alive connections, each request signed with a fresh MessageSid), the server under
//! test, and for the reply latency a loopback mock of Twilio's Messages API. Both servers
//! under comparison face the same generator, so the ratio is what the full path costs.

/// The same allocator as the `switchboard` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use poem::web::Form;
use poem::{EndpointExt, Route, Server, handler, post};
use secrecy::SecretString;
use switchboard_config::Settings;
use switchboard_domain::TenantId;
use switchboard_domain::message::Direction;
use switchboard_domain::phone::E164;
use switchboard_domain::signature::twilio;
use switchboard_entity::ingest::NewInbound;
use switchboard_entity::{TenantOwned, TenantTx, conversation, message};
use switchboard_services::ingest::PipelineStats;
use switchboard_services::jobs::{Enqueue, Job, JobQueue, QUEUE_SEND, SendMessage};
use switchboard_services::tenancy::{self, BotKind, NewTenant, TwilioCredentials};
use switchboard_services::{App, TenantCtx, messaging};
use switchboard_testkit::Services;
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Switchboard benchmarks (run with --release)")]
struct Args {
    /// Seconds of each throughput measurement (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent keep-alive connections of the closed-loop load.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Inbound texts for the reply-latency measurement.
    #[arg(long, default_value_t = 1000)]
    reply_samples: usize,
    /// Inbound texts per second during the reply-latency measurement.
    #[arg(long, default_value_t = 100)]
    reply_rate: u64,
    /// Texts posted at once for the burst measurement (each its own connection).
    #[arg(long, default_value_t = 100)]
    burst: usize,
    /// Run only the ingest measurement (workers off), e.g. under a profiler.
    #[arg(long)]
    only_ingest: bool,
    /// With --only-ingest: also measure latency at half the measured load.
    #[arg(long)]
    with_latency: bool,
    /// Run only the store path: the inbound writer fed directly by `--connections` tasks (no
    /// HTTP, no signature), workers off. The ceiling of the ingest measurement.
    #[arg(long)]
    only_store: bool,
    /// Run only the workers-on load and time how long the workers take to drain it.
    #[arg(long)]
    only_drain: bool,
    /// Run only the reply-latency measurement, and print its latency over time.
    #[arg(long)]
    only_reply: bool,
    /// Measure on Postgres + Redis instead of SQLite: a Postgres server URL whose user may
    /// create databases (each target gets a new one), e.g. postgres://postgres@127.0.0.1/postgres.
    #[arg(long, requires = "redis")]
    postgres: Option<String>,
    /// Redis URL for --postgres (each target gets its own key prefix).
    #[arg(long, requires = "postgres")]
    redis: Option<String>,
    /// With --postgres: run only the send-job, no-op job and idle RSS measurements.
    #[arg(long, requires = "postgres")]
    only_send: bool,
    /// With --postgres: send jobs for the send-throughput measurement.
    #[arg(long, default_value_t = 5000)]
    send_jobs: usize,
    /// With --postgres: the release binary whose idle RSS to measure as `serve --no-worker`
    /// and `worker`.
    #[arg(long, default_value = "target/release/switchboard")]
    binary: String,
}

/// Where the full targets keep their data.
#[derive(Clone)]
enum Backend {
    /// A new SQLite file per target (the embedded default).
    Sqlite,
    /// A new database per target on this Postgres server, and a new key prefix on this Redis.
    Scale { postgres: String, redis: String },
}

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const NUMBER: &str = "+14155550100";
const TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// A distinct valid NANP customer number for each `i` (exchange 200-999, line 0000-9999).
fn customer(i: u64) -> String {
    format!("+1713{:03}{:04}", 200 + (i / 10_000) % 800, i % 10_000)
}

/// A signed inbound webhook body as Twilio would send it (fresh MessageSid).
fn signed_inbound(url: &str, from: &str, body: &str) -> (String, Bytes) {
    let params = switchboard_testkit::inbound(ACCOUNT_SID, from, NUMBER, body);
    let signature = twilio::compute(AUTH_TOKEN, url, &params);
    (
        signature,
        Bytes::from(serde_urlencoded::to_string(&params).expect("form")),
    )
}

// ------------------------------------------------------------------ load generator

/// One HTTP/1.1 keep-alive connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn { sender }
    }

    /// POSTs a signed webhook; returns the status code.
    async fn post(&mut self, addr: SocketAddr, path: &str, signature: &str, body: Bytes) -> u16 {
        self.sender.ready().await.expect("connection ready");
        let req = Request::post(path)
            .header("host", addr.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(Full::new(body))
            .expect("request");
        let resp = self.sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        resp.into_body().collect().await.expect("body");
        status
    }
}

struct Target {
    addr: SocketAddr,
    /// The URL Twilio signs (APP_URL + path).
    url: String,
    /// The app and its one tenant (full targets).
    app: Option<(Arc<App>, TenantId)>,
}

const PATH: &str = "/webhooks/twilio/sms";

impl Target {
    /// The inbound writer's running totals (full targets).
    fn pipeline(&self) -> PipelineStats {
        self.app
            .as_ref()
            .map(|(app, _)| app.ingest.stats())
            .unwrap_or_default()
    }
}

/// What the inbound writer did between two readings: mean texts per commit, ms of writing per
/// commit, ms per WAL sync, commits per WAL sync.
fn pipeline_line(before: PipelineStats, after: PipelineStats) -> String {
    let commits = (after.commits - before.commits).max(1) as f64;
    let syncs = (after.wal_syncs - before.wal_syncs).max(1) as f64;
    format!(
        "{:.1} texts per commit, {:.2} ms writing per commit, {:.2} ms per WAL sync, {:.2} commits per sync",
        (after.texts - before.texts) as f64 / commits,
        (after.write_time - before.write_time).as_secs_f64() * 1e3 / commits,
        (after.wal_sync_time - before.wal_sync_time).as_secs_f64() * 1e3 / syncs,
        commits / syncs
    )
}

/// Scheduler figures of this process's threads and of the machine's CPUs at one instant (Linux
/// `/proc`), to show which thread waits for a CPU while the CPUs idle.
struct Sched {
    at: Instant,
    /// Thread id -> (name, ns running, ns runnable but waiting for a CPU), from
    /// `/proc/self/task/<tid>/schedstat`. The main thread is the load generator.
    threads: HashMap<u32, (String, u64, u64)>,
    /// Jiffies of all CPUs: (total, idle, iowait), from `/proc/stat`'s `cpu` line.
    cpu: (u64, u64, u64),
}

impl Sched {
    fn now() -> Self {
        let mut threads = HashMap::new();
        let pid = std::process::id();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let read = |file: &str| std::fs::read_to_string(task.path().join(file));
            let (Ok(name), Ok(stat)) = (read("comm"), read("schedstat")) else {
                continue;
            };
            let mut ns = stat
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            let (run, wait) = (ns.next().unwrap_or(0), ns.next().unwrap_or(0));
            let name = if tid == pid {
                "load generator".to_string()
            } else {
                name.trim().to_string()
            };
            threads.insert(tid, (name, run, wait));
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // user, nice, system, idle, iowait, irq, softirq, steal: the guest fields after them
        // are already counted in user and nice.
        let jiffies: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| jiffies.get(i).copied().unwrap_or(0);
        Self {
            at: Instant::now(),
            threads,
            cpu: (jiffies.iter().sum(), field(3), field(4)),
        }
    }

    /// Since `before`, by thread name (threads of one name summed; names under 10 ms/s left
    /// out; "(xN)": N threads of the name ran 10 ms/s or more): ms per second running /
    /// runnable but waiting for a CPU; then the machine's CPU idle and iowait shares.
    fn line(&self, before: &Sched) -> String {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let ms_per_s = |ns: u64| ns as f64 / 1e6 / secs;
        let mut by_name: BTreeMap<&str, (u64, u64, usize)> = BTreeMap::new();
        for (tid, (name, run, wait)) in &self.threads {
            let (run0, wait0) = before
                .threads
                .get(tid)
                .map_or((0, 0), |(_, run, wait)| (*run, *wait));
            let ran = run.saturating_sub(run0);
            let entry = by_name.entry(name).or_default();
            entry.0 += ran;
            entry.1 += wait.saturating_sub(wait0);
            // Threads that ran at least 1% of the time (each full target has its own writer).
            entry.2 += usize::from(ms_per_s(ran) >= 10.0);
        }
        let mut busy: Vec<_> = by_name
            .into_iter()
            .filter(|(_, (run, _, _))| ms_per_s(*run) >= 10.0)
            .collect();
        busy.sort_by_key(|(_, (run, _, _))| std::cmp::Reverse(*run));
        let threads: Vec<String> = busy
            .iter()
            .map(|(name, (run, wait, n))| {
                let count = if *n > 1 {
                    format!(" (x{n})")
                } else {
                    String::new()
                };
                format!("{name}{count} {:.0}/{:.0}", ms_per_s(*run), ms_per_s(*wait))
            })
            .collect();
        let total = self.cpu.0.saturating_sub(before.cpu.0).max(1) as f64;
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 * 100.0 / total;
        format!(
            "{}; CPU idle {:.1}%, iowait {:.1}%",
            threads.join(", "),
            share(self.cpu.1, before.cpu.1),
            share(self.cpu.2, before.cpu.2)
        )
    }
}

/// The inbound writer's totals and the threads' scheduler figures at the start of a
/// measurement of a full target; [`Window::print`] reports what they did since.
struct Window {
    stats: PipelineStats,
    sched: Sched,
}

impl Window {
    fn open(target: &Target) -> Self {
        Self {
            stats: target.pipeline(),
            sched: Sched::now(),
        }
    }

    /// Prints the inbound writer's line ([`pipeline_line`]) and the threads' line
    /// ([`Sched::line`]) since [`Window::open`].
    fn print(&self, target: &Target) {
        let (stats, sched) = (target.pipeline(), Sched::now());
        println!("  inbound writer: {}", pipeline_line(self.stats, stats));
        println!(
            "  threads, ms per s running / waiting for a CPU: {}",
            sched.line(&self.sched)
        );
    }
}

/// The counters of a closed-loop measurement, shared by its tasks: each task loops until
/// [`Meter::stopped`] and records each outcome; only outcomes after the 2 s warm-up count.
#[derive(Clone, Default)]
struct Meter {
    counting: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl Meter {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn record(&self, ok: bool) {
        if self.counting.load(Ordering::Relaxed) {
            let counter = if ok { &self.done } else { &self.errors };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Warms up 2 s, counts for `secs`, stops and joins `tasks`. Panics when any counted
    /// outcome failed.
    async fn measure(&self, secs: u64, tasks: Vec<tokio::task::JoinHandle<()>>) -> Measured {
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.counting.store(true, Ordering::Relaxed);
        let (start, cpu_start) = (Instant::now(), cpu_ticks());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        self.counting.store(false, Ordering::Relaxed);
        let (elapsed, cpu) = (start.elapsed().as_secs_f64(), cpu_ticks() - cpu_start);
        self.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let errors = self.errors.load(Ordering::Relaxed);
        assert_eq!(errors, 0, "failures during the run");
        let done = self.done.load(Ordering::Relaxed) as f64;
        Measured {
            rate: done / elapsed,
            cpu_us: cpu as f64 * 1e6 / TICKS_PER_SEC / done,
        }
    }
}

/// The outcome of a closed-loop measurement.
#[derive(Clone, Copy)]
struct Measured {
    /// Successes per second.
    rate: f64,
    /// CPU time of the whole process (load generator, server, writer, syncer, checkpointer;
    /// user + system) per success, in µs. Time stolen by the hypervisor is not in it, but a
    /// shared VM's speed still moves it between runs: compare it within one run.
    cpu_us: f64,
}

/// Linux `USER_HZ`: the unit of `/proc/self/stat`'s CPU times.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of this process so far, in ticks of [`TICKS_PER_SEC`]
/// (`/proc/self/stat` fields 14 and 15).
fn cpu_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Closed loop: `connections` clients send back to back. Measures requests/s over `secs`.
async fn throughput(target: &Target, connections: usize, secs: u64) -> Measured {
    let meter = Meter::default();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let meter = meter.clone();
        let (addr, url) = (target.addr, target.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut i = c as u64;
            while !meter.stopped() {
                let (sig, body) =
                    signed_inbound(&url, &customer(i % 5000), "Is anyone available today?");
                i += connections as u64;
                meter.record(conn.post(addr, PATH, &sig, body).await == 200);
            }
        }));
    }
    meter.measure(secs, tasks).await
}

/// Closed loop straight into the inbound writer: `tasks` submitters, each a text from one of
/// the same 5,000 senders as [`throughput`]. Measures texts stored per second over `secs`.
async fn store_rate(target: &Target, tasks: usize, secs: u64) -> Measured {
    let (app, _) = target.app.clone().expect("full target");
    let route = tenancy::route(&app, &E164::parse(NUMBER).expect("number"))
        .await
        .expect("route")
        .expect("the bench number");
    let owner = route.owner;
    let meter = Meter::default();
    let mut running = Vec::new();
    for t in 0..tasks {
        let (app, meter, owner) = (app.clone(), meter.clone(), owner.clone());
        running.push(tokio::spawn(async move {
            let mut i = t as u64;
            while !meter.stopped() {
                let item = NewInbound {
                    tenant_id: owner.tenant_id,
                    phone_number_id: owner.phone_number_id,
                    from: customer(i % 5000),
                    provider_sid: format!("SM{}", uuid::Uuid::new_v4().simple()),
                    body: "Is anyone available today?".into(),
                    media: None,
                    segments: 1,
                    encoding: "gsm7",
                    received_at: chrono::Utc::now(),
                    keyword: None,
                    provider_replied: false,
                    request_id: None,
                };
                i += tasks as u64;
                meter.record(app.ingest.submit(item).await.is_ok());
            }
        }));
    }
    meter.measure(secs, running).await
}

/// Open loop at `rate` requests/s for `secs`: latency from each request's scheduled time
/// (so a stall counts against every request it delays). Returns sorted latencies in µs.
async fn open_loop(target: &Target, rate: f64, connections: usize, secs: u64) -> Vec<u64> {
    let per_conn_interval = Duration::from_secs_f64(connections as f64 / rate);
    let total_per_conn = ((rate * secs as f64) / connections as f64) as u64;
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (addr, url) = (target.addr, target.url.clone());
        let offset = per_conn_interval.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::with_capacity(total_per_conn as usize);
            for k in 0..total_per_conn {
                let scheduled = start + offset + per_conn_interval.mul_f64(k as f64);
                let (sig, body) = signed_inbound(
                    &url,
                    &customer((k * connections as u64 + c as u64) % 5000),
                    "Is anyone available today?",
                );
                tokio::time::sleep_until(scheduled.into()).await;
                let status = conn.post(addr, PATH, &sig, body).await;
                assert_eq!(status, 200);
                lat.push(scheduled.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    all
}

/// (bytes written, write calls) of this process so far (Linux `/proc/self/io`).
fn io_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("syscw:"))
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

// ------------------------------------------------------------------ servers under test

#[handler]
fn bare_handler(Form(params): Form<Vec<(String, String)>>) -> poem::Response {
    std::hint::black_box(&params);
    poem::Response::builder()
        .content_type("text/xml")
        .body(TWIML)
}

async fn start_bare() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
    tokio::spawn(
        Server::new_with_acceptor(acceptor).run(Route::new().at(PATH, post(bare_handler))),
    );
    Target {
        addr,
        url: format!("http://{addr}{PATH}"),
        app: None,
    }
}

/// A loopback Twilio that records when each `To` got its first message.
#[derive(Clone, Default)]
struct MockTwilio {
    first_reply: Arc<Mutex<HashMap<String, Instant>>>,
}

#[handler]
fn twilio_create(
    Form(params): Form<Vec<(String, String)>>,
    mock: poem::web::Data<&MockTwilio>,
) -> poem::Response {
    if let Some((_, to)) = params.iter().find(|(k, _)| k == "To") {
        mock.first_reply
            .lock()
            .expect("lock")
            .entry(to.clone())
            .or_insert_with(Instant::now);
    }
    let body = serde_json::json!({"sid": format!("SM{}", uuid::Uuid::new_v4().simple()), "status": "queued"});
    poem::Response::builder()
        .status(poem::http::StatusCode::CREATED)
        .content_type("application/json")
        .body(body.to_string())
}

async fn start_mock_twilio() -> (String, MockTwilio) {
    let mock = MockTwilio::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
    let route = Route::new()
        .at(
            "/2010-04-01/Accounts/:sid/Messages.json",
            post(twilio_create),
        )
        .data(mock.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(route));
    (format!("http://{addr}"), mock)
}

/// Starts the full product with one tenant on `NUMBER`, on a new SQLite file in `dir` or a
/// new Postgres database and Redis prefix (their guards are pushed to `keep`).
async fn start_full(
    backend: &Backend,
    dir: &std::path::Path,
    keep: &mut Vec<Services>,
    twilio_base: &str,
    bot: BotKind,
    workers: bool,
) -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app_url = format!("http://{addr}");
    let mut pairs: Vec<(String, String)> = vec![
        ("APP_URL".into(), app_url.clone()),
        (
            "DATABASE_URL".into(),
            format!("sqlite://{}", dir.join("bench.db").display()),
        ),
        (
            "SECRET_KEY".into(),
            "bench-secret-key-bench-secret-key-01234".into(),
        ),
        ("TWILIO_API_BASE".into(), twilio_base.into()),
        ("DEMO_SEED".into(), "false".into()),
    ];
    if let Backend::Scale { postgres, redis } = backend {
        let (services, settings) = Services::create_with(Some(postgres), Some(redis)).await;
        keep.push(services);
        pairs.extend(settings);
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let settings = Settings::from_pairs(&refs).expect("settings");
    let app: Arc<App> = App::start(settings).await.expect("app");
    let tenant = tenancy::create_tenant(
        &app,
        NewTenant {
            name: "Bench Plumbing".into(),
            time_zone: "America/Chicago".into(),
            number: E164::parse(NUMBER).expect("number"),
            bot,
            twilio: Some(TwilioCredentials {
                account_sid: ACCOUNT_SID.into(),
                auth_token: SecretString::from(AUTH_TOKEN),
            }),
        },
    )
    .await
    .expect("tenant");
    tokio::spawn(switchboard::serve(
        app.clone(),
        listener,
        workers,
        std::future::pending(),
    ));
    Target {
        addr,
        url: format!("{app_url}{PATH}"),
        app: Some((app, tenant.tenant_id)),
    }
}

/// How the workers caught up after a load.
struct Drained {
    /// Inbound texts not yet handled when the load stopped.
    backlog: u64,
    /// Of those, still not handled when [`drain`] gave up (0: all handled).
    left: u64,
    /// Seconds until none were left, or until it gave up (polled every 0.5 s).
    secs: f64,
}

impl Drained {
    fn print(&self) {
        let (backlog, secs) = (self.backlog, self.secs);
        let rate = backlog.saturating_sub(self.left) as f64 / secs;
        if self.left == 0 {
            println!(
                "  workers finished the backlog ({backlog} texts) {secs:.1} s after the load stopped: {rate:.0} texts/s"
            );
        } else {
            println!(
                "  workers did NOT finish the backlog ({backlog} texts): {} left after {secs:.1} s, {rate:.0} texts/s",
                self.left
            );
        }
    }
}

/// Waits until every inbound message of the target's tenant is handled.
async fn drain(target: &Target) -> Drained {
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
    let start = Instant::now();
    let (app, tenant) = target.app.clone().expect("full target");
    let mut backlog = None;
    loop {
        let tx = TenantTx::read(&app.db, tenant).await.expect("transaction");
        let pending = message::Entity::scoped(tenant)
            .filter(message::Column::Direction.eq(Direction::Inbound))
            .filter(message::Column::HandledAt.is_null())
            .count(tx.conn())
            .await
            .expect("count");
        drop(tx);
        let backlog = *backlog.get_or_insert(pending);
        if pending == 0 || start.elapsed() > Duration::from_secs(300) {
            return Drained {
                backlog,
                left: pending,
                secs: start.elapsed().as_secs_f64(),
            };
        }
        // The count scans the table: poll rarely so it does not slow the workers it watches.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `n` signed texts from distinct senders, 32 at a time (each opens a conversation).
async fn seed(target: &Target, n: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (addr, url, next) = (target.addr, target.url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return;
                }
                let (sig, body) =
                    signed_inbound(&url, &customer(200_000 + i), "When can you come?");
                assert_eq!(conn.post(addr, PATH, &sig, body).await, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("seed task");
    }
}

/// Writes one manual reply per conversation of `target` (rows and send jobs, no worker
/// running); returns how many.
async fn queue_sends(target: &Target) -> usize {
    let (app, tenant) = target.app.clone().expect("full target");
    let tx = TenantTx::read(&app.db, tenant).await.expect("transaction");
    let conversations = conversation::Entity::scoped(tenant)
        .all(tx.conn())
        .await
        .expect("conversations");
    drop(tx);
    let ctx = TenantCtx::for_job(tenant);
    for c in &conversations {
        messaging::send_manual(&app, &ctx, c.id, "Your technician is on the way.", None)
            .await
            .expect("queued");
    }
    conversations.len()
}

/// Starts the target's workers and times until the mock received `n` sends; sends/s.
async fn send_rate(target: &Target, mock: &MockTwilio, n: usize) -> f64 {
    let (app, _) = target.app.clone().expect("full target");
    let start = Instant::now();
    eprintln!("sending {n} queued texts");
    tokio::spawn(switchboard_worker::run(app, std::future::pending()));
    while mock.first_reply.lock().expect("lock").len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "sends did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn noop(
    _: SendMessage,
    done: apalis::prelude::Data<Arc<AtomicU64>>,
) -> Result<(), apalis::prelude::BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The same queue with a job that does nothing: `n` `SendMessage` jobs pushed as the app
/// pushes them (to a new key prefix), then one worker configured as the send worker, whose
/// handler only counts, drains them; jobs/s.
async fn noop_rate(redis: &str, n: usize, concurrency: usize) -> f64 {
    use apalis::prelude::*;
    let conn = apalis_redis::connect(redis).await.expect("redis");
    let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let jobs = JobQueue::redis(conn.clone(), &prefix);
    let queues = jobs.redis_queues().expect("redis queues").clone();
    let batch: Vec<Enqueue> = (0..n)
        .map(|i| {
            let job = SendMessage::new(TenantId::new(), switchboard_domain::MessageId::new());
            Enqueue::now(Job::SendMessage(job), format!("noop:{i}"))
        })
        .collect();
    for chunk in batch.chunks(1000) {
        jobs.push(chunk).await.expect("push");
    }
    let done = Arc::new(AtomicU64::new(0));
    let storage = apalis_redis::RedisStorage::<SendMessage>::new(conn)
        .with_config(queues.config(QUEUE_SEND).batch_size(concurrency))
        .poll_with_strategy(Strategy::new().interval(Duration::from_secs(1)));
    let worker = WorkerBuilder::new("bench-noop")
        .backend(storage)
        .data(done.clone())
        .concurrency(concurrency)
        .catch_panic()
        .build(noop);
    let start = Instant::now();
    let running = tokio::spawn(worker.run());
    while done.load(Ordering::Relaxed) < n as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no-op jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    running.abort();
    switchboard_testkit::delete_redis_prefix(redis, &prefix).await;
    rate
}

/// Resident set size of a process, in MiB (`VmRSS` of /proc/{pid}/status).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Idle RSS (MiB) of `binary` as `serve --no-worker` and as `worker`, each on its own new
/// database and prefix, 10 s after the web process answered /ready.
async fn idle_rss(binary: &str, postgres: &str, redis: &str) -> (f64, f64) {
    let (_services, settings) = Services::create_with(Some(postgres), Some(redis)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut env = settings;
    env.extend([
        (
            "SECRET_KEY".to_string(),
            "bench-secret-key-bench-secret-key-01234".to_string(),
        ),
        ("BIND".into(), format!("127.0.0.1:{port}")),
        ("RUST_LOG".into(), "warn".into()),
    ]);
    let spawn = |args: &[&str]| {
        std::process::Command::new(binary)
            .args(args)
            .envs(env.iter().cloned())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e} (build it with cargo build --release)"))
    };
    let mut web = spawn(&["serve", "--no-worker"]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "serve never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut worker = spawn(&["worker"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = (rss_mib(web.id()), rss_mib(worker.id()));
    let _ = web.kill();
    let _ = worker.kill();
    let _ = web.wait();
    let _ = worker.wait();
    rss
}

/// Reply latency: signed inbound -> first reply received by the mock Twilio, for `samples`
/// texts at `rate`/s, each from a new sender (numbered from `first`), in the order sent (µs).
async fn reply_latency(
    target: &Target,
    mock: &MockTwilio,
    first: u64,
    samples: usize,
    rate: u64,
) -> Vec<u64> {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let senders: Vec<String> = (0..samples as u64).map(|i| customer(first + i)).collect();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut conn = Conn::open(target.addr).await;
    let start = Instant::now();
    for (i, from) in senders.iter().enumerate() {
        let (sig, body) = signed_inbound(&target.url, from, "my water heater is leaking");
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        sent.lock()
            .expect("lock")
            .insert(from.clone(), Instant::now());
        assert_eq!(conn.post(target.addr, PATH, &sig, body).await, 200);
    }
    let replies = first_replies(mock, &senders).await;
    let sent = sent.lock().expect("lock");
    senders
        .iter()
        .map(|from| replies[from].duration_since(sent[from]).as_micros() as u64)
        .collect()
}

/// When each of `senders` got its first reply at the mock; waits up to 30 s for them all.
async fn first_replies(mock: &MockTwilio, senders: &[String]) -> HashMap<String, Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let replies = mock.first_reply.lock().expect("lock");
            if senders.iter().all(|from| replies.contains_key(from)) {
                return senders
                    .iter()
                    .map(|from| (from.clone(), replies[from]))
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "every text got a reply within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` texts from new senders (numbered from `first`) posted at the same instant, each over
/// its own connection: they commit together, and their replies come from one burst of bot
/// decisions. Latency from that instant to each first reply at the mock, sorted (µs).
async fn burst_latency(target: &Target, mock: &MockTwilio, first: u64, n: usize) -> Vec<u64> {
    let senders: Vec<String> = (0..n as u64).map(|i| customer(first + i)).collect();
    let mut posts = Vec::with_capacity(n);
    for from in &senders {
        let (sig, body) = signed_inbound(&target.url, from, "my water heater is leaking");
        posts.push((Conn::open(target.addr).await, sig, body));
    }
    let start = Instant::now() + Duration::from_millis(50);
    let addr = target.addr;
    let tasks: Vec<_> = posts
        .into_iter()
        .map(|(mut conn, sig, body)| {
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                assert_eq!(conn.post(addr, PATH, &sig, body).await, 200);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("post");
    }
    let replies = first_replies(mock, &senders).await;
    sorted(
        senders
            .iter()
            .map(|from| replies[from].duration_since(start).as_micros() as u64)
            .collect(),
    )
}

/// Where the reply latency goes, from the rows' own timestamps: inbound stored -> handled
/// (HandleInbound job), handled -> first reply written, reply written -> sent (SendMessage
/// job and the provider call) of the texts stored from `since` on; p50 and p99 of each, in ms.
async fn reply_stages(target: &Target, since: chrono::DateTime<chrono::Utc>) {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    let (app, tenant) = target.app.clone().expect("full target");
    let tx = TenantTx::read(&app.db, tenant).await.expect("transaction");
    let rows = message::Entity::scoped(tenant)
        .order_by_asc(message::Column::Id)
        .filter(message::Column::ConversationId.is_not_null())
        .all(tx.conn())
        .await
        .expect("messages");
    drop(tx);
    let mut first: HashMap<_, (Option<&message::Model>, Option<&message::Model>)> = HashMap::new();
    for m in &rows {
        let e = first.entry(m.conversation_id).or_default();
        match m.direction {
            Direction::Inbound if e.0.is_none() => e.0 = Some(m),
            Direction::Outbound if e.1.is_none() => e.1 = Some(m),
            _ => {}
        }
    }
    let ms = |d: chrono::Duration| d.num_microseconds().unwrap_or(0).max(0) as u64;
    let (mut handled, mut written, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for (inbound, reply) in first.values() {
        let (Some(i), Some(r)) = (inbound, reply) else {
            continue;
        };
        let Some(h) = i.handled_at.filter(|_| i.created_at >= since) else {
            continue;
        };
        handled.push(ms(h - i.created_at));
        written.push(ms(r.created_at - h));
        if let Some(at) = r.sent_at {
            sent.push(ms(at - r.created_at));
        }
    }
    for (name, v) in [
        ("stored -> handled", handled),
        ("handled -> reply written", written),
        ("reply written -> sent", sent),
    ] {
        let v = sorted(v);
        println!(
            "  {name:<26} p50 {:>7.2} ms, p99 {:>7.2} ms",
            pct(&v, 0.5),
            pct(&v, 0.99)
        );
    }
}

/// The summary table's row of a burst's sorted latencies (µs).
fn burst_row(burst: &[u64]) -> String {
    format!(
        "| burst of {} texts at once: first reply p50 / last | {:.2} ms / {:.2} ms | — |",
        burst.len(),
        pct(burst, 0.5),
        pct(burst, 1.0)
    )
}

/// Sorted copy of `lat`, for [`pct`].
fn sorted(mut lat: Vec<u64>) -> Vec<u64> {
    lat.sort_unstable();
    lat
}

/// Postgres + Redis only: send-job throughput, the same number of no-op jobs, and the idle
/// RSS of the release binary as web and as worker process.
fn scale_extras(
    args: &Args,
    backend: &Backend,
    postgres: &str,
    redis: &str,
    server_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    keep: &mut Vec<Services>,
) -> (f64, f64, (f64, f64)) {
    let dir = tempfile::tempdir().expect("dir");
    let (twilio_base, send_mock) = server_rt.block_on(start_mock_twilio());
    let send_t = server_rt.block_on(start_full(
        backend,
        dir.path(),
        keep,
        &twilio_base,
        BotKind::None,
        false,
    ));
    load_rt.block_on(seed(&send_t, args.send_jobs));
    // The seed's HandleInbound jobs (no bot: nothing to send) run first, so that only send
    // jobs are timed.
    server_rt.block_on(async {
        let app = send_t.app.clone().expect("full target").0;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let workers = tokio::spawn(switchboard_worker::run(app, async move {
            let _ = stopped.await;
        }));
        drain(&send_t).await;
        let _ = stop.send(());
        let _ = workers.await;
    });
    let n = server_rt.block_on(queue_sends(&send_t));
    let sends = server_rt.block_on(send_rate(&send_t, &send_mock, n));
    let concurrency = send_t
        .app
        .as_ref()
        .expect("app")
        .0
        .settings
        .worker_concurrency_send;
    println!(
        "send jobs against a zero-latency mock Twilio ({n} jobs, concurrency {concurrency}): {sends:.0} sends/s"
    );
    let noop = server_rt.block_on(noop_rate(redis, n, concurrency));
    println!("no-op apalis-redis jobs (same count and concurrency): {noop:.0} jobs/s");
    let rss = server_rt.block_on(idle_rss(&args.binary, postgres, redis));
    println!(
        "idle RSS: serve --no-worker {:.1} MiB, worker {:.1} MiB",
        rss.0, rss.1
    );
    (sends, noop, rss)
}

fn main() {
    let args = Args::parse();
    // RUST_LOG=… shows the app's logs, with each span's busy and idle time when it closes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .try_init();
    // The servers run on their own runtime (2 worker threads = this machine's cores); the load
    // generator on another thread. All compete for the same 2 cores, as wrk would.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];

    let backend = match (&args.postgres, &args.redis) {
        (Some(postgres), Some(redis)) => Backend::Scale {
            postgres: postgres.clone(),
            redis: redis.clone(),
        },
        _ => Backend::Sqlite,
    };
    let mut keep = Vec::new();
    if args.only_send {
        let Backend::Scale { postgres, redis } = &backend else {
            unreachable!("--only-send requires --postgres")
        };
        let (sends, noop, rss) = scale_extras(
            &args, &backend, postgres, redis, &server_rt, &load_rt, &mut keep,
        );
        println!(
            "| send jobs | {sends:.0} sends/s = {:.2}x no-op ({noop:.0}/s) | idle RSS {:.1} / {:.1} MiB |",
            sends / noop,
            rss.0,
            rss.1
        );
        return;
    }
    let (bare_t, ingest_t, full_t, reply_t, mock) = server_rt.block_on(async {
        let (twilio_base, mock) = start_mock_twilio().await;
        let bare_t = start_bare().await;
        let (b, k, base) = (&backend, &mut keep, twilio_base.as_str());
        let ingest_t = start_full(b, dirs[0].path(), k, base, BotKind::None, false).await;
        let full_t = start_full(b, dirs[1].path(), k, base, BotKind::None, true).await;
        let reply_t = start_full(b, dirs[2].path(), k, base, BotKind::Qualify, true).await;
        (bare_t, ingest_t, full_t, reply_t, mock)
    });
    if let Backend::Scale { .. } = backend {
        println!("backend: Postgres + Redis (a new database and key prefix per target)");
    }

    let report = load_rt.block_on(async {
        let secs = args.seconds;
        let c = args.connections;
        println!("measuring {secs} s each, {c} connections, on {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        if args.only_drain {
            let full = throughput(&full_t, c, secs).await;
            println!("webhook path + in-process workers:    {:>9.0} req/s, {:.0} µs CPU each", full.rate, full.cpu_us);
            drain(&full_t).await.print();
            return None;
        }
        if args.only_store {
            let window = Window::open(&ingest_t);
            let stored = store_rate(&ingest_t, c, secs).await;
            println!(
                "store path alone (inbound writer, no HTTP): {:>9.0} texts/s, {:.1} µs CPU each",
                stored.rate, stored.cpu_us
            );
            window.print(&ingest_t);
            return None;
        }
        if args.only_ingest {
            let before = io_counters();
            let window = Window::open(&ingest_t);
            let Measured { rate: ingest, cpu_us } = throughput(&ingest_t, c, secs).await;
            let after = io_counters();
            let requests = ingest * (secs + 2) as f64;
            println!(
                "webhook path, workers off (ingest):   {ingest:>9.0} req/s, {cpu_us:.1} µs CPU each; ~{:.0} bytes written and {:.1} write calls per webhook",
                (after.0 - before.0) as f64 / requests,
                (after.1 - before.1) as f64 / requests
            );
            window.print(&ingest_t);
            if args.with_latency {
                let half = open_loop(&ingest_t, ingest / 2.0, c, secs).await;
                println!(
                    "  latency at half that load ({:.0} req/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    ingest / 2.0,
                    pct(&half, 0.5),
                    pct(&half, 0.99),
                    pct(&half, 1.0)
                );
            }
            return None;
        }
        // Reply latency first, on a quiet machine: it is a latency, not a load, measurement.
        // One second of texts first, not counted: the steady state is measured, not a cold
        // start (a fresh Postgres pool opens its connections, TLS included, in that burst).
        let rate = args.reply_rate;
        let warm = sorted(reply_latency(&reply_t, &mock, 900_000, rate as usize, rate).await);
        println!(
            "warm-up, not counted ({} texts at {rate}/s): p50 {:.2} ms, max {:.2} ms",
            warm.len(),
            pct(&warm, 0.5),
            pct(&warm, 1.0)
        );
        let measured_from = chrono::Utc::now();
        let in_order = reply_latency(&reply_t, &mock, 100_000, args.reply_samples, rate).await;
        if args.only_reply {
            // Where the tail is: p50 and max of each second's texts.
            for (second, chunk) in in_order.chunks(args.reply_rate as usize).enumerate() {
                let chunk = sorted(chunk.to_vec());
                println!(
                    "  second {second:>3}: p50 {:>7.2} ms, max {:>7.2} ms",
                    pct(&chunk, 0.5),
                    pct(&chunk, 1.0)
                );
            }
        }
        let reply = sorted(in_order);
        println!(
            "reply latency (signed inbound -> mock Twilio, built-in bot, {} texts at {}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            reply.len(),
            args.reply_rate,
            pct(&reply, 0.5),
            pct(&reply, 0.99),
            pct(&reply, 1.0)
        );
        if args.only_reply {
            reply_stages(&reply_t, measured_from).await;
        }
        let burst_from = chrono::Utc::now();
        let burst = burst_latency(&reply_t, &mock, 200_000, args.burst).await;
        println!(
            "burst of {} texts at once (built-in bot): first reply after p50 {:.2} ms, last after {:.2} ms",
            burst.len(),
            pct(&burst, 0.5),
            pct(&burst, 1.0)
        );
        if args.only_reply {
            reply_stages(&reply_t, burst_from).await;
            return None;
        }
        let Measured { rate: bare, cpu_us: bare_cpu } = throughput(&bare_t, c, secs).await;
        println!("bare poem handler:                    {bare:>9.0} req/s, {bare_cpu:.1} µs CPU each");
        let window = Window::open(&ingest_t);
        let Measured { rate: ingest, cpu_us: ingest_cpu } = throughput(&ingest_t, c, secs).await;
        println!(
            "webhook path, workers off (ingest):   {ingest:>9.0} req/s  ({:.2}x bare), {ingest_cpu:.1} µs CPU each ({:.2}x bare's CPU per request)",
            ingest / bare,
            bare_cpu / ingest_cpu
        );
        window.print(&ingest_t);
        let half_ingest = open_loop(&ingest_t, ingest / 2.0, c, secs).await;
        println!(
            "  latency at half that load ({:.0} req/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
            ingest / 2.0,
            pct(&half_ingest, 0.5),
            pct(&half_ingest, 0.99),
            pct(&half_ingest, 1.0),
            half_ingest.len()
        );
        let full = throughput(&full_t, c, secs).await.rate;
        println!("webhook path + in-process workers:    {full:>9.0} req/s  ({:.2}x bare)", full / bare);
        drain(&full_t).await.print();
        let half = open_loop(&full_t, full / 2.0, c, secs).await;
        println!(
            "  latency at half that load ({:.0} req/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
            full / 2.0,
            pct(&half, 0.5),
            pct(&half, 0.99),
            pct(&half, 1.0),
            half.len()
        );
        Some((bare, ingest, full, half_ingest, half, reply, burst))
    });
    // A partial run (--only-…) ends here; returning drops `keep`, which deletes the run's
    // databases and Redis keys.
    let Some((bare, ingest, full, half_ingest, half, reply, burst)) = report else {
        return;
    };
    if let Backend::Scale { postgres, redis } = &backend {
        let (sends, noop, (rss_web, rss_worker)) = scale_extras(
            &args, &backend, postgres, redis, &server_rt, &load_rt, &mut keep,
        );
        println!();
        println!("| measurement (Postgres + Redis) | result | target |");
        println!("|---|---|---|");
        println!("| bare poem handler | {bare:.0} req/s | reference |");
        println!(
            "| inbound webhook path (workers off) | {ingest:.0} req/s = **{:.2}x** bare | — |",
            ingest / bare
        );
        println!(
            "| p99 at half that load ({:.0} req/s) | {:.2} ms (p50 {:.2} ms) | — |",
            ingest / 2.0,
            pct(&half_ingest, 0.99),
            pct(&half_ingest, 0.5)
        );
        println!(
            "| inbound webhook path with in-process workers | {full:.0} req/s = {:.2}x bare | — |",
            full / bare
        );
        println!(
            "| reply latency p50 / p99 (built-in bot) | {:.2} ms / **{:.2} ms** | p99 <= 100 ms |",
            pct(&reply, 0.5),
            pct(&reply, 0.99)
        );
        println!(
            "| send jobs, zero-latency mock | **{sends:.0} sends/s** = {:.2}x no-op jobs ({noop:.0}/s) | >= 2,000/s |",
            sends / noop
        );
        println!(
            "| idle RSS, serve --no-worker / worker | **{rss_web:.1} MiB / {rss_worker:.1} MiB** | <= 50 MB each |"
        );
        println!("{}", burst_row(&burst));
        let _ = half;
        return;
    }
    println!();
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    println!(
        "| bare poem handler (same form, same load generator) | {bare:.0} req/s | reference |"
    );
    println!(
        "| inbound webhook path (workers off) | {ingest:.0} req/s = **{:.2}x** bare | >= 0.3x |",
        ingest / bare
    );
    println!(
        "| p99 at half that load ({:.0} req/s) | **{:.2} ms** (p50 {:.2} ms) | <= 25 ms |",
        ingest / 2.0,
        pct(&half_ingest, 0.99),
        pct(&half_ingest, 0.5)
    );
    println!(
        "| inbound webhook path with in-process workers | {full:.0} req/s = **{:.2}x** bare | (sustained) |",
        full / bare
    );
    println!(
        "| p99 at half that load ({:.0} req/s) | **{:.2} ms** (p50 {:.2} ms) | <= 25 ms |",
        full / 2.0,
        pct(&half, 0.99),
        pct(&half, 0.5)
    );
    println!(
        "| reply latency p50 / p99 | {:.2} ms / **{:.2} ms** | p99 <= 50 ms |",
        pct(&reply, 0.5),
        pct(&reply, 0.99)
    );
    println!("{}", burst_row(&burst));
}
