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

use std::collections::HashMap;
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
use switchboard_domain::phone::E164;
use switchboard_domain::signature::twilio;
use switchboard_services::App;
use switchboard_services::tenancy::{self, BotKind, NewTenant, TwilioCredentials};
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
    /// Run only the ingest measurement (workers off), e.g. under a profiler.
    #[arg(long)]
    only_ingest: bool,
    /// With --only-ingest: also measure latency at half the measured load.
    #[arg(long)]
    with_latency: bool,
    /// Run only the workers-on load and time how long the workers take to drain it.
    #[arg(long)]
    only_drain: bool,
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
    /// A read connection to the server's database (full targets).
    db: Option<sqlx::SqlitePool>,
}

const PATH: &str = "/webhooks/twilio/sms";

/// Closed loop: `connections` clients send back to back. Returns requests/s over `secs`.
async fn throughput(target: &Target, connections: usize, secs: u64) -> f64 {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (counting, stop, done, errors) =
            (counting.clone(), stop.clone(), done.clone(), errors.clone());
        let (addr, url) = (target.addr, target.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut i = c as u64;
            while !stop.load(Ordering::Relaxed) {
                let (sig, body) =
                    signed_inbound(&url, &customer(i % 5000), "Is anyone available today?");
                i += connections as u64;
                let status = conn.post(addr, PATH, &sig, body).await;
                if counting.load(Ordering::Relaxed) {
                    if status == 200 {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let errors = errors.load(Ordering::Relaxed);
    assert_eq!(errors, 0, "non-200 answers during the run");
    done.load(Ordering::Relaxed) as f64 / elapsed
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
        db: None,
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

/// Starts the full product on a fresh SQLite file with one tenant on `NUMBER`.
async fn start_full(
    dir: &std::path::Path,
    twilio_base: &str,
    bot: BotKind,
    workers: bool,
) -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app_url = format!("http://{addr}");
    let db = format!("sqlite://{}", dir.join("bench.db").display());
    let settings = Settings::from_pairs(&[
        ("APP_URL", &app_url),
        ("DATABASE_URL", &db),
        ("SECRET_KEY", "bench-secret-key-bench-secret-key-01234"),
        ("TWILIO_API_BASE", twilio_base),
        ("DEMO_SEED", "false"),
    ])
    .expect("settings");
    let app: Arc<App> = App::start(settings).await.expect("app");
    tenancy::create_tenant(
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
    let db = app.db.read.get_sqlite_connection_pool().clone();
    tokio::spawn(switchboard::serve(
        app,
        listener,
        workers,
        std::future::pending(),
    ));
    Target {
        addr,
        url: format!("{app_url}{PATH}"),
        db: Some(db),
    }
}

/// Waits until every inbound message of the target's database is handled; returns seconds.
async fn drain(target: &Target) -> f64 {
    let start = Instant::now();
    let db = target.db.clone().expect("full target");
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE direction = 'inbound' AND handled_at IS NULL",
        )
        .fetch_one(&db)
        .await
        .expect("count");
        if pending == 0 || start.elapsed() > Duration::from_secs(300) {
            return start.elapsed().as_secs_f64();
        }
        // The count scans the table: poll rarely so it does not slow the workers it watches.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// Reply latency: signed inbound -> first reply received by the mock Twilio.
async fn reply_latency(target: &Target, mock: &MockTwilio, samples: usize, rate: u64) -> Vec<u64> {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut conn = Conn::open(target.addr).await;
    let start = Instant::now();
    for i in 0..samples {
        let from = customer(100_000 + i as u64);
        let (sig, body) = signed_inbound(&target.url, &from, "my water heater is leaking");
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        sent.lock().expect("lock").insert(from, Instant::now());
        assert_eq!(conn.post(target.addr, PATH, &sig, body).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.first_reply.lock().expect("lock").len() < samples && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replies = mock.first_reply.lock().expect("lock");
    let sent = sent.lock().expect("lock");
    assert_eq!(replies.len(), samples, "every inbound text got a reply");
    let mut lat: Vec<u64> = sent
        .iter()
        .map(|(from, at)| replies[from].duration_since(*at).as_micros() as u64)
        .collect();
    lat.sort_unstable();
    lat
}

fn main() {
    let args = Args::parse();
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

    let (bare_t, ingest_t, full_t, reply_t, mock) = server_rt.block_on(async {
        let (twilio_base, mock) = start_mock_twilio().await;
        let bare_t = start_bare().await;
        let ingest_t = start_full(dirs[0].path(), &twilio_base, BotKind::None, false).await;
        let full_t = start_full(dirs[1].path(), &twilio_base, BotKind::None, true).await;
        let reply_t = start_full(dirs[2].path(), &twilio_base, BotKind::Qualify, true).await;
        (bare_t, ingest_t, full_t, reply_t, mock)
    });

    let report = load_rt.block_on(async {
        let secs = args.seconds;
        let c = args.connections;
        println!("measuring {secs} s each, {c} connections, on {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        if args.only_drain {
            let full = throughput(&full_t, c, secs).await;
            println!("webhook path + in-process workers:    {full:>9.0} req/s");
            let drained = drain(&full_t).await;
            println!("  workers finished the backlog {drained:.1} s after the load stopped");
            std::process::exit(0);
        }
        if args.only_ingest {
            let before = io_counters();
            let ingest = throughput(&ingest_t, c, secs).await;
            let after = io_counters();
            let requests = ingest * (secs + 2) as f64;
            println!(
                "webhook path, workers off (ingest):   {ingest:>9.0} req/s; ~{:.0} bytes written and {:.1} write calls per webhook",
                (after.0 - before.0) as f64 / requests,
                (after.1 - before.1) as f64 / requests
            );
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
            std::process::exit(0);
        }
        // Reply latency first, on a quiet machine: it is a latency, not a load, measurement.
        let reply = reply_latency(&reply_t, &mock, args.reply_samples, args.reply_rate).await;
        println!(
            "reply latency (signed inbound -> mock Twilio, built-in bot, {} texts at {}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            reply.len(),
            args.reply_rate,
            pct(&reply, 0.5),
            pct(&reply, 0.99),
            pct(&reply, 1.0)
        );
        let bare = throughput(&bare_t, c, secs).await;
        println!("bare poem handler:                    {bare:>9.0} req/s");
        let ingest = throughput(&ingest_t, c, secs).await;
        println!("webhook path, workers off (ingest):   {ingest:>9.0} req/s  ({:.2}x bare)", ingest / bare);
        let half_ingest = open_loop(&ingest_t, ingest / 2.0, c, secs).await;
        println!(
            "  latency at half that load ({:.0} req/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
            ingest / 2.0,
            pct(&half_ingest, 0.5),
            pct(&half_ingest, 0.99),
            pct(&half_ingest, 1.0),
            half_ingest.len()
        );
        let full = throughput(&full_t, c, secs).await;
        println!("webhook path + in-process workers:    {full:>9.0} req/s  ({:.2}x bare)", full / bare);
        let drained = drain(&full_t).await;
        println!("  workers finished the backlog {drained:.1} s after the load stopped");
        let half = open_loop(&full_t, full / 2.0, c, secs).await;
        println!(
            "  latency at half that load ({:.0} req/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
            full / 2.0,
            pct(&half, 0.5),
            pct(&half, 0.99),
            pct(&half, 1.0),
            half.len()
        );
        (bare, ingest, full, half_ingest, half, reply)
    });
    let (bare, ingest, full, half_ingest, half, reply) = report;
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
}
