//! The HTTP edge against slow and greedy clients (DESIGN §13): request
//! heads and collector bodies have deadlines, idle keep-alive connections
//! are closed, connections are bounded, and the operators' routes are not
//! on the public listener.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Reads until the server closes the connection (or `within` passes):
/// what was read, and when the connection ended (None: still open).
async fn until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_trickled_headers_and_idle_connections_are_closed() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.api.header_timeout = Duration::from_secs(1);
    let app = spawn_app(s).await;
    let at = addr(&app.base);

    // A request head that never ends.
    let mut half = TcpStream::connect(&at).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header line every 300 ms: each byte arrives, the head never does.
    let mut trickle = TcpStream::connect(&at).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickled = tokio::spawn(async move {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let line = format!("X-Slow-{i}: 1\r\n");
            if trickle.write_all(line.as_bytes()).await.is_err() {
                return Some(i);
            }
        }
        None
    });
    // A keep-alive connection that asked once and then says nothing.
    let mut idle = TcpStream::connect(&at).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    let (_, closed) = until_closed(&mut half, Duration::from_secs(5)).await;
    let closed = closed.expect("a half-sent head is closed");
    assert!(
        closed >= Duration::from_millis(800) && closed < Duration::from_secs(3),
        "closed after {closed:?}"
    );
    let (answer, closed) = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the idle connection's one request is answered"
    );
    assert!(closed.expect("an idle keep-alive connection is closed") < Duration::from_secs(3));
    let refused_at = trickled.await.unwrap();
    assert!(
        refused_at.is_some_and(|i| i < 10),
        "a trickled head is cut within the timeout, whatever it sends: {refused_at:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_slow_connections_leave_a_normal_reader_answered() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.api.header_timeout = Duration::from_secs(3);
    let app = spawn_app(s).await;
    let at = addr(&app.base);
    let url = format!("{}/v1/rankings/trending", app.base);
    let timed = |http: reqwest::Client, url: String| async move {
        let t = Instant::now();
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        t.elapsed()
    };
    let mut usual = Duration::ZERO;
    for _ in 0..20 {
        usual = usual.max(timed(app.http.clone(), url.clone()).await);
    }
    let mut slow = Vec::new();
    for _ in 0..3_000 {
        let mut c = TcpStream::connect(&at).await.unwrap();
        c.write_all(b"GET /v1/rankings/trending HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    let mut during = Duration::ZERO;
    for _ in 0..20 {
        during = during.max(timed(app.http.clone(), url.clone()).await);
    }
    assert!(
        during < usual.max(Duration::from_millis(20)) * 10,
        "the worst of 20 requests took {during:?} among 3,000 slow connections, {usual:?} alone"
    );
    // Every slow connection is closed by the server, none answered.
    let ends = futures::future::join_all(
        slow.iter_mut()
            .map(|c| until_closed(c, Duration::from_secs(10))),
    )
    .await;
    let open = ends.iter().filter(|(_, closed)| closed.is_none()).count();
    let answered = ends.iter().filter(|(got, _)| !got.is_empty()).count();
    assert_eq!(
        (open, answered),
        (0, 0),
        "slow connections left open / answered"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_closed_at_once_and_counted() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.api.max_connections = 50;
    s.api.header_timeout = Duration::from_secs(30);
    let app = spawn_app(s).await;
    let at = addr(&app.base);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(&at).await.unwrap());
    }
    // Let the server accept all 50 before the next ones arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = Vec::new();
    for _ in 0..20 {
        extra.push(TcpStream::connect(&at).await.unwrap());
    }
    for c in &mut extra {
        let (got, closed) = until_closed(c, Duration::from_secs(2)).await;
        assert!(
            got.is_empty() && closed.is_some(),
            "one past the bound is closed unanswered"
        );
    }
    assert_eq!(
        app.metric("popularity_http_connections_refused_total")
            .await,
        20.0
    );
    // The operators' listener is not counted against the public bound, and
    // once the held connections go, readers are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_body_sent_a_byte_at_a_time_gets_408_within_the_body_timeout() {
    let kafka = Kafka::start(1);
    let mut s = settings(&kafka, None);
    s.collector.body_timeout = Duration::from_secs(1);
    s.api.cors_allowed_origins = vec!["*".into()];
    let app = spawn_app(s).await;
    let mut c = TcpStream::connect(addr(&app.base)).await.unwrap();
    c.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 200\r\n\r\n[",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = c.into_split();
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
            .await
            .expect("answered within 5 s")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        app.metric("popularity_collector_rejected_total{reason=\"body_timeout\"}")
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_editors_api_are_only_on_the_operators_listener() {
    let kafka = Kafka::start(1);
    let app = spawn_app(settings(&kafka, None)).await;
    for path in ["/metrics", "/v1/admin/sites/default/exclusions"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 404, "{path} on the public listener: {body}");
    }
    let scrape = app.metrics().await;
    assert!(
        scrape.contains("popularity_http_requests_total"),
        "{scrape}"
    );
    // The default keeps it on loopback.
    let defaults = popularity::config::Settings::defaults();
    assert_eq!(defaults.api.admin_listen, "127.0.0.1:9464");
    app.stop().await;
}

/// Redis's count of commands processed so far.
fn commands_processed(redis: &RedisServer) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "INFO", "stats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_read_examines_a_part_of_the_ranking_bounded_by_its_limit_and_offset() {
    use popularity::event::{ArticleMeta, EventType};
    use popularity::scoring::Aggregate;
    let redis = redis_server();
    let kafka = Kafka::start(1);
    let s = settings(&kafka, Some(&redis));
    let profiles = popularity::scoring::profiles(&s.scoring);
    let app = spawn_app(s).await;
    let now = now_ms();
    // 5,000 articles published two days ago, and two published now: one
    // ranked 100th, one ranked 4,000th.
    const N: usize = 5_000;
    let id = |rank: usize| match rank {
        100 => "fresh-near".to_string(),
        4_000 => "fresh-far".to_string(),
        r => format!("old-{r}"),
    };
    let metas: Vec<ArticleMeta> = (1..=N)
        .map(|rank| ArticleMeta {
            article_id: id(rank),
            title: Some(format!("T {rank}")),
            section: Some("news".into()),
            published_at_ms: Some(if id(rank).starts_with("fresh") {
                now - 60_000
            } else {
                now - 2 * 86_400_000
            }),
            ..Default::default()
        })
        .collect();
    app.store.publish(&metas).await.unwrap();
    let mut agg = Aggregate::new(profiles, now).laid_out(app.store.layout());
    for rank in 1..=N {
        let units = (N + 1 - rank) as f64;
        agg.add(
            EventType::PageView,
            &id(rank),
            Some("news"),
            &[],
            now,
            units,
        );
    }
    app.store.apply(&agg).await.unwrap();

    let mut costs = Vec::new();
    for (query, want) in [
        ("limit=10", vec![]),
        ("published_within=15m&limit=10", vec!["fresh-near"]),
        ("published_within=1s&limit=100&offset=100", vec![]),
        ("published_within=1s&limit=100&offset=2000", vec![]),
    ] {
        let before = commands_processed(&redis);
        let (status, body) = app.get(&format!("/v1/rankings/trending?{query}")).await;
        let commands = commands_processed(&redis) - before;
        assert_eq!(status, 200, "{query}: {body}");
        let ids: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["article_id"].as_str().unwrap())
            .collect();
        if !want.is_empty() || query.contains("published_within") {
            assert_eq!(ids, want, "{query}");
        }
        costs.push((query, commands));
    }
    println!("Redis commands per read: {costs:?}");
    // About a command per article examined: the plain first page reads
    // 10, the filtered reads 400 and 800 (four times offset + limit) of
    // the 5,000, and never more than 2,000, however deep the page.
    let (plain, near, deep, deepest) = (costs[0].1, costs[1].1, costs[2].1, costs[3].1);
    assert!(plain <= 10 + 8, "{costs:?}");
    assert!(near <= 400 + 32 && deep <= 800 + 32, "{costs:?}");
    assert!(deepest <= 2_000 + 32, "{costs:?}");
    app.stop().await;
}
