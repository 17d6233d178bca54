//! Postgres + Redis only (run by `.ci/postgres/run` with `TEST_DATABASE_URL` and
//! `TEST_REDIS_URL`): row-level security as the database enforces it, below the application's
//! scoped queries; several processes on one database; how jobs run on Redis.

use sea_orm::{EntityTrait, PaginatorTrait};
use sqlx::{Connection, Executor, PgConnection};
use switchboard_entity::tenancy::{APP_ROLE, LOOKUP_ROLE, SET_TENANT};
use switchboard_entity::{TenantTx, message};
use switchboard_migration::postgres::{LOOKUP_TABLES, TENANT_TABLES};
use switchboard_services::tenancy::BotKind;
use switchboard_testkit::{TestApp, create_tenant, spawn_app};

async fn app_on_postgres() -> TestApp {
    assert!(
        switchboard_testkit::postgres_requested(),
        "run with TEST_DATABASE_URL and TEST_REDIS_URL (.ci/postgres/run)"
    );
    let t = spawn_app().await;
    assert!(t.app.settings.database_url.starts_with("postgres"));
    t
}

/// A connection working as the application role, as the app's pool does.
async fn as_app(t: &TestApp) -> PgConnection {
    let mut conn = PgConnection::connect(&t.app.settings.database_url)
        .await
        .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET ROLE {APP_ROLE}")))
        .await
        .unwrap();
    conn
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs Postgres + Redis (.ci/postgres/run)"]
async fn without_a_tenant_every_tenant_table_reads_empty_and_writes_fail() {
    let t = app_on_postgres().await;
    // Rows in every tenant table for tenant A (and some for B): a text, a member, an invite.
    let b = create_tenant(&t.app, "Other Co", "+14155550199", BotKind::Qualify).await;
    t.text_in("+15125550001", "my water heater is leaking")
        .await;
    t.wait_for_sends(1).await;
    let (mut browser, _, _) = t
        .member(
            t.tenant.tenant_id,
            switchboard_domain::accounts::Role::Owner,
        )
        .await;
    let resp = browser
        .post_form(
            "/settings/invites",
            &[("email", "new.agent@example.com"), ("role", "agent")],
        )
        .await;
    assert!(resp.status().is_redirection(), "{}", resp.status());

    let mut conn = as_app(&t).await;
    let role: (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        role,
        (false, false),
        "the app role is no superuser and has no BYPASSRLS"
    );
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owned, 0, "the app role owns no table");

    for (table, column) in TENANT_TABLES {
        let forced: (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(format!("public.{table}"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            forced,
            (true, true),
            "{table}: row-level security enabled and forced"
        );

        // No tenant: nothing to read, nothing to change.
        assert_eq!(count(&mut conn, table).await, 0, "{table} without a tenant");
        let updated = conn
            .execute(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = {column}"
            )))
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(updated, 0, "{table}: UPDATE without a tenant");
        let deleted = conn
            .execute(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(deleted, 0, "{table}: DELETE without a tenant");

        // Tenant A set: A's rows, and only A's.
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(SET_TENANT)
            .bind(t.tenant.tenant_id.uuid().to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let visible = count(&mut tx, table).await;
        assert!(visible > 0, "{table}: tenant A sees its rows");
        let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE {column} <> $1"
        )))
        .bind(t.tenant.tenant_id.uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(foreign, 0, "{table}: tenant A sees no other tenant's row");
        tx.rollback().await.unwrap();
    }

    // Inserting without a tenant, or for another tenant than the one set, fails.
    let insert = "INSERT INTO contacts (id, tenant_id, phone, status, created_at, updated_at) \
                  VALUES (gen_random_uuid(), $1, '+15125550999', 'new', now(), now())";
    let err = sqlx::query(insert)
        .bind(t.tenant.tenant_id.uuid())
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(SET_TENANT)
        .bind(b.tenant_id.uuid().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query(insert)
        .bind(t.tenant.tenant_id.uuid())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);

    // The app's own pool: outside a tenant transaction nothing is visible; inside, the tenant's.
    assert_eq!(
        message::Entity::find().count(&t.app.db.read).await.unwrap(),
        0
    );
    let tx = TenantTx::read(&t.app.db, t.tenant.tenant_id).await.unwrap();
    let mine = message::Entity::find().count(tx.conn()).await.unwrap();
    assert!(mine >= 2, "the text and the bot's reply: {mine}");
    // Everything is still there (the test's own connection bypasses row-level security).
    let all = message::Entity::find().count(&t.db.read).await.unwrap();
    assert_eq!(all, mine);

    // The lookup role reads across tenants, but only the tables the lookups need.
    let mut lookup = PgConnection::connect(&t.app.settings.database_url)
        .await
        .unwrap();
    lookup
        .execute(sqlx::AssertSqlSafe(format!("SET ROLE {LOOKUP_ROLE}")))
        .await
        .unwrap();
    for table in LOOKUP_TABLES {
        assert!(
            count(&mut lookup, table).await > 0,
            "{table}: the lookups read it"
        );
    }
    for table in [
        "contacts",
        "conversations",
        "users",
        "sessions",
        "email_tokens",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {table} LIMIT 1"
        )))
        .fetch_optional(&mut lookup)
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{table}: {err}"
        );
    }
}

/// One `switchboard` process of the multi-process test.
struct Process {
    child: tokio::process::Child,
}

impl Process {
    fn start(args: &[&str], env: &[(String, String)]) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .envs(env.iter().cloned())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("switchboard starts");
        Self { child }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

async fn run_to_end(args: &[&str], env: &[(String, String)]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "switchboard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until<F: Fn() -> bool>(what: &str, secs: u64, done: F) {
    let start = std::time::Instant::now();
    let deadline = start + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("{what}: after {:.1} s", start.elapsed().as_secs_f64());
}

/// `n` texts from distinct senders numbered from `first`, spread over `webs`, `parallel` at a
/// time; every one must be answered 200.
async fn text_in_many(
    http: &reqwest::Client,
    webs: &[String],
    token: &str,
    first: u32,
    n: u32,
    during: impl Fn(u32),
) {
    use futures::StreamExt;
    let app_url = "http://switchboard.test";
    let mut answered = 0;
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let k = first + i;
            let from = format!("+1713{:03}{:04}", 200 + (k / 10_000) % 800, k % 10_000);
            let params = switchboard_testkit::inbound(
                "AC00000000000000000000000000000001",
                &from,
                "+14155550100",
                "hello",
            );
            let signature = switchboard_domain::signature::twilio::compute(
                token,
                &format!("{app_url}/webhooks/twilio/sms"),
                &params,
            );
            let url = format!("{}/webhooks/twilio/sms", webs[i as usize % webs.len()]);
            let http = http.clone();
            async move {
                http.post(url)
                    .header("X-Twilio-Signature", signature)
                    .form(&params)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(32);
    while let Some(status) = calls.next().await {
        assert_eq!(
            status.expect("the web process answers"),
            reqwest::StatusCode::OK
        );
        answered += 1;
        during(answered);
    }
    assert_eq!(answered, n);
}

/// Every text the mock Twilio received, as (To, Body), checked for duplicates.
fn sends_by_recipient(
    ledger: &switchboard_testkit::TwilioLedger,
) -> std::collections::HashMap<String, usize> {
    let mut by_to = std::collections::HashMap::new();
    for form in ledger.sent() {
        let to = switchboard_testkit::param(&form, "To").unwrap().to_string();
        *by_to.entry(to).or_insert(0) += 1;
    }
    by_to
}

/// Replies the built-in bot sends to a new contact's first text: the greeting and the first
/// question.
const REPLIES_PER_TEXT: usize = 2;

/// Fails naming every text (recipient, body) the mock Twilio received more than once, and
/// every recipient that did not get exactly [`REPLIES_PER_TEXT`] texts.
fn assert_exact_replies(ledger: &switchboard_testkit::TwilioLedger, senders: usize) {
    let mut seen = std::collections::HashMap::new();
    for form in ledger.sent() {
        let key = (
            switchboard_testkit::param(&form, "To").unwrap().to_string(),
            switchboard_testkit::param(&form, "Body")
                .unwrap()
                .to_string(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "texts sent more than once: {twice:?}");
    let by_to = sends_by_recipient(ledger);
    assert_eq!(by_to.len(), senders, "every sender got replies");
    let wrong: Vec<_> = by_to
        .iter()
        .filter(|(_, n)| **n != REPLIES_PER_TEXT)
        .collect();
    assert!(
        wrong.is_empty(),
        "senders without exactly {REPLIES_PER_TEXT} replies: {wrong:?}"
    );
}

async fn inbound_count(database_url: &str) -> i64 {
    let mut conn = PgConnection::connect(database_url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'inbound'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Postgres + Redis (.ci/postgres/run)"]
async fn two_web_and_two_worker_processes_lose_nothing_and_send_nothing_twice() {
    use switchboard_testkit::wiremock::matchers::path_regex;
    use switchboard_testkit::wiremock::{Mock, MockServer};
    use switchboard_testkit::{MESSAGES_PATH, Services, TwilioLedger};
    const TEXTS: u32 = 1000;

    assert!(
        switchboard_testkit::postgres_requested(),
        "run with .ci/postgres/run"
    );
    let (_services, mut env) = Services::create().await;
    let twilio = MockServer::start().await;
    let ledger = TwilioLedger::default();
    Mock::given(path_regex(MESSAGES_PATH))
        .respond_with(ledger.clone())
        .mount(&twilio)
        .await;
    let token = "0123456789abcdef0123456789abcdef";
    env.extend([
        ("APP_URL".to_string(), "http://switchboard.test".to_string()),
        (
            "SECRET_KEY".into(),
            "multi-process-secret-multi-process-secret".into(),
        ),
        ("TWILIO_API_BASE".into(), twilio.uri()),
        ("TWILIO_TIMEOUT_SECS".into(), "1".into()),
        ("RUST_LOG".into(), "warn".into()),
        ("LOG_FORMAT".into(), "json".into()),
    ]);
    let database_url = env
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .unwrap()
        .1
        .clone();
    run_to_end(&["migrate"], &env).await;
    run_to_end(
        &[
            "admin",
            "create-tenant",
            "--name",
            "Acme Plumbing",
            "--phone",
            "+14155550100",
            "--twilio-account-sid",
            "AC00000000000000000000000000000001",
            "--twilio-auth-token",
            token,
        ],
        &env,
    )
    .await;

    let mut webs = Vec::new();
    let mut web_processes = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let mut env = env.clone();
        env.push(("BIND".into(), format!("127.0.0.1:{port}")));
        web_processes.push(Process::start(&["serve", "--no-worker"], &env));
        webs.push(format!("http://127.0.0.1:{port}"));
    }
    // The second worker (it survives to the end) serves its own metrics.
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let workers = vec![
        Process::start(&["worker"], &env),
        Process::start(&["worker", "--metrics-bind", &worker_metrics], &env),
    ];
    let http = reqwest::Client::new();
    for web in &webs {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ready = http.get(format!("{web}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{web} never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    // 1,000 texts over both web processes: 1,000 stored, the bot's two replies to each.
    text_in_many(&http, &webs, token, 0, TEXTS, |_| {}).await;
    assert_eq!(inbound_count(&database_url).await, i64::from(TEXTS));
    let expected = TEXTS as usize * REPLIES_PER_TEXT;
    wait_until("the first replies", 120, || ledger.sent().len() >= expected).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_exact_replies(&ledger, TEXTS as usize);
    // A worker's job and send series are on its own /metrics (the web processes run no jobs).
    let series = http
        .get(format!("http://{worker_metrics}/metrics"))
        .send()
        .await
        .expect("the worker's metrics answer")
        .text()
        .await
        .unwrap();
    assert!(
        series.contains("switchboard_jobs_total{") && series.contains("switchboard_send_seconds"),
        "{series}"
    );

    // 1,000 more while one worker is SIGKILLed mid-run: its jobs come back (orphan recovery)
    // and the outbox check keeps any send from happening twice.
    let killed = std::sync::atomic::AtomicBool::new(false);
    let victim = &workers[0];
    let base = ledger.sent().len();
    text_in_many(&http, &webs, token, 100_000, TEXTS, |_| {
        if !killed.load(std::sync::atomic::Ordering::Relaxed) && ledger.sent().len() >= base + 300 {
            victim.signal("-KILL");
            killed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .await;
    if !killed.load(std::sync::atomic::Ordering::Relaxed) {
        victim.signal("-KILL");
    }
    assert_eq!(inbound_count(&database_url).await, i64::from(2 * TEXTS));
    wait_until("the second replies", 180, || {
        ledger.sent().len() >= 2 * expected
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_exact_replies(&ledger, 2 * TEXTS as usize);

    // SIGTERM: the survivors finish what they hold and exit cleanly.
    for p in web_processes.iter().chain(&workers[1..]) {
        p.signal("-TERM");
    }
    for mut p in web_processes.into_iter().chain(workers.into_iter().skip(1)) {
        let status = tokio::time::timeout(std::time::Duration::from_secs(40), p.child.wait())
            .await
            .expect("exits within 40 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
#[ignore = "needs Postgres + Redis (.ci/postgres/run)"]
async fn an_sse_client_of_one_instance_sees_what_another_instance_stored_and_sent() {
    use switchboard_testkit::{inbound, spawn_app_without_workers};
    // Instance A serves pages only; instance B, on the same database and Redis, takes the
    // webhook and runs the workers.
    let a = spawn_app_without_workers().await;
    assert!(a.app.settings.database_url.starts_with("postgres"));
    let b = switchboard_services::App::start(a.app.settings.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(switchboard::serve(
        b,
        listener,
        true,
        std::future::pending(),
    ));

    let (owner, _, _) = a
        .member(
            a.tenant.tenant_id,
            switchboard_domain::accounts::Role::Owner,
        )
        .await;
    let mut events = owner.get("/events").await;
    assert_eq!(events.status(), 200);

    // Signed for the public URL (APP_URL, A's address), delivered to B.
    let params = inbound(
        &a.tenant.account_sid,
        "+17135550177",
        &a.tenant.number,
        "hi there",
    );
    let signature = switchboard_domain::signature::twilio::compute(
        &a.tenant.auth_token,
        &format!("{}/webhooks/twilio/sms", a.address),
        &params,
    );
    let resp = a
        .http
        .post(format!("{b_address}/webhooks/twilio/sms"))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A's stream shows the inbound text (B's webhook) and the bot's two replies, created and
    // then updated by B's workers (A runs none).
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while seen.matches("message_created").count() < 3 || !seen.contains("message_updated") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = tokio::time::timeout(left, events.chunk())
            .await
            .unwrap_or_else(|_| panic!("A's stream showed only: {seen}"))
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        a.wait_for_sends(2).await.len(),
        2,
        "B's workers sent the replies"
    );
}

/// Jobs run without apalis-redis' task lock, whose `LREM` over the queue's whole active list
/// made every job cost a pass over the backlog (`RedisQueues::config`). Each job is
/// acknowledged (`Done`), and its metadata names no lock holder: a lock is always taken before
/// its job's acknowledgement, so a lock would show here.
#[tokio::test]
#[ignore = "needs Postgres + Redis (.ci/postgres/run)"]
async fn redis_jobs_run_to_done_without_a_task_lock() {
    use std::time::{Duration, Instant};
    use switchboard_services::jobs::{QUEUE_INBOUND, QUEUE_SEND};
    let t = app_on_postgres().await;
    let queues = t.app.jobs.redis_queues().expect("jobs on Redis");
    assert_eq!(t.text_in("+17135550170", "hi").await.status(), 200);
    t.wait_for_sends(2).await;
    let mut conn = queues.conn().clone();
    for queue in [QUEUE_INBOUND, QUEUE_SEND] {
        let config = queues.config(queue);
        let ids: Vec<String> = redis::cmd("HKEYS")
            .arg(config.job_data_hash())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!ids.is_empty(), "{queue}: jobs ran");
        for id in ids {
            let meta = format!("{}:{id}", config.job_meta_hash());
            let deadline = Instant::now() + Duration::from_secs(10);
            let (status, holder) = loop {
                let (status, holder): (Option<String>, Option<String>) = redis::cmd("HMGET")
                    .arg(&meta)
                    .arg("status")
                    .arg("locked_by")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if status.as_deref() == Some("Done") || Instant::now() > deadline {
                    break (status, holder);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(status.as_deref(), Some("Done"), "{queue} job {id}");
            assert_eq!(holder, None, "{queue} job {id} took a task lock");
        }
    }
}

/// Thousands of retries due at once (the workers were down while Twilio failed) do not stop
/// the Redis send queue: apalis-redis' fetch would promote them all in one Lua `unpack`
/// ("too many results to unpack") and fail at every fetch; the worker promotes them in
/// chunks before its first fetch and then every `PROMOTE_DUE_MS`.
#[tokio::test]
#[ignore = "needs Postgres + Redis (.ci/postgres/run)"]
async fn thousands_of_due_retries_do_not_stop_the_redis_queue() {
    use std::time::Duration;
    use switchboard_domain::MessageId;
    use switchboard_services::jobs::{Enqueue, Job, SendMessage};

    assert!(switchboard_testkit::postgres_requested());
    let t = switchboard_testkit::spawn_app_without_workers().await;
    assert!(t.app.jobs.redis_queues().is_some(), "jobs on Redis");
    let stale: Vec<Enqueue> = (0..9_000)
        .map(|i| {
            let job = Job::SendMessage(SendMessage {
                tenant_id: t.tenant.tenant_id,
                message_id: MessageId::new(),
                request_id: None,
            });
            Enqueue::after(job, format!("stale-retry:{i}"), Duration::from_millis(1))
        })
        .collect();
    for chunk in stale.chunks(1_000) {
        t.app.jobs.push(chunk).await.unwrap();
    }
    // Due by apalis-redis' whole-second scores.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(t.text_in("+17135550172", "HELP").await.status(), 200);
    let worker = tokio::spawn(switchboard_worker::run(
        t.app.clone(),
        std::future::pending(),
    ));
    // The 9,000 stale jobs go first, each finding no message: ~8 s alone on 2 cores, and
    // several times that while another test's four processes share them.
    let sends = t.wait_for_sends_within(1, Duration::from_secs(120)).await;
    assert!(
        switchboard_testkit::param(&sends[0], "Body")
            .unwrap()
            .contains("STOP")
    );
    worker.abort();
}

/// Finished Redis jobs are purged page by page (`SSCAN` of the done set, a short script per
/// page) instead of apalis-redis' `HGETALL` of every job: an hour-old finished job loses its
/// data, metadata and done-set entry; a recent one keeps them.
#[tokio::test]
#[ignore = "needs Postgres + Redis (.ci/postgres/run)"]
async fn old_finished_redis_jobs_are_purged_and_recent_ones_kept() {
    use std::time::{Duration, Instant};
    use switchboard_services::jobs::{QUEUE_INBOUND, QUEUE_SEND};
    use switchboard_services::sweep;
    let t = app_on_postgres().await;
    let queues = t.app.jobs.redis_queues().expect("jobs on Redis");
    assert_eq!(t.text_in("+17135550173", "HELP").await.status(), 200);
    t.wait_for_sends(1).await;
    let mut conn = queues.conn().clone();
    let done = async |queue: &str, conn: &mut redis::aio::ConnectionManager| -> Vec<String> {
        redis::cmd("SMEMBERS")
            .arg(queues.config(queue).done_jobs_set())
            .query_async(conn)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while done(QUEUE_INBOUND, &mut conn).await.is_empty()
        || done(QUEUE_SEND, &mut conn).await.is_empty()
    {
        assert!(Instant::now() < deadline, "both jobs finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = done(QUEUE_INBOUND, &mut conn).await;
    let inbound = queues.config(QUEUE_INBOUND);
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 3600;
    for id in &old {
        let _: () = redis::cmd("HSET")
            .arg(format!("{}:{id}", inbound.job_meta_hash()))
            .arg("done_at")
            .arg(long_ago)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let recent = done(QUEUE_SEND, &mut conn).await;

    let keep = Duration::from_secs(sweep::KEEP_FINISHED_JOBS_SECS);
    t.app
        .jobs
        .purge_finished(keep, sweep::PURGE_CHUNK)
        .await
        .unwrap();
    for id in &old {
        let (data, meta): (bool, bool) = redis::pipe()
            .hexists(inbound.job_data_hash(), id)
            .exists(format!("{}:{id}", inbound.job_meta_hash()))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!data && !meta, "old job {id} purged");
    }
    assert!(done(QUEUE_INBOUND, &mut conn).await.is_empty());
    let send = queues.config(QUEUE_SEND);
    for id in &recent {
        let data: bool = redis::cmd("HEXISTS")
            .arg(send.job_data_hash())
            .arg(id)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(data, "recent job {id} kept");
    }
    assert_eq!(done(QUEUE_SEND, &mut conn).await, recent);
}
