//! Consumer groups on Tansu 0.6.0, the second broker of the fault tests
//! (docs/operations.md, "Recovery after a crash"): members added and
//! leaving, as on Kafka, and where it is not Kafka, shown rather than
//! told. A test of the second kind that fails means Tansu changed: the
//! docs, and the tests that work around it, must change with it.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use crate::helpers::*;
use crate::kit::*;

/// The offset of the first record a consumer is given when it starts
/// reading at offset 5 of a partition that holds one produce batch of ten
/// records (offsets 0–9) and then one of a single record (offset 10).
async fn first_offset_read_from_inside_a_batch(kind: BrokerKind) -> i64 {
    let kafka = Kafka::on(kind, 1);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.broker.bootstrap_servers())
        .set("linger.ms", "500")
        .create()
        .unwrap();
    let payloads: Vec<String> = (0..11).map(|i| format!("m{i}")).collect();
    // Ten records sent at once, lingering together: one batch; then one more.
    let mut offsets = Vec::new();
    for batch in [&payloads[..10], &payloads[10..]] {
        let mut sent = Vec::new();
        for p in batch {
            let record = FutureRecord::to(&kafka.events).key("k").payload(p);
            sent.push(producer.send_result(record).unwrap());
        }
        for d in sent {
            offsets.push(d.await.unwrap().unwrap().offset);
        }
    }
    assert_eq!(offsets, (0..11).collect::<Vec<i64>>());
    let consumer: BaseConsumer = kafka.reader("inside");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.events, 0, Offset::Offset(5))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "nothing read from offset 5");
        if let Some(m) = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200))) {
            return m.unwrap().offset();
        }
    }
}

/// Kafka's contract, kept by the dev broker: a consumer that resumes at an
/// offset inside a batch is given that offset's record next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_from_inside_a_batch_starts_at_that_record_on_the_dev_broker() {
    assert_eq!(
        first_offset_read_from_inside_a_batch(BrokerKind::Dev).await,
        5
    );
}

/// Tansu 0.6.0 returns the batches whose first offset is at or after the
/// one asked for, so a consumer resuming inside a batch never sees the rest
/// of it: a consumer that committed in the middle of a producer's batch and
/// was then killed loses those records (the service commits what it
/// applied, wherever in a batch that ends). Why the `kill -9` test on Tansu
/// produces one record per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_reading_from_inside_a_batch_skips_the_rest_of_it() {
    assert_eq!(
        first_offset_read_from_inside_a_batch(BrokerKind::Tansu).await,
        10,
        "Tansu now reads from inside a batch as Kafka does: produce batches of \
         any size in the kill -9 test on Tansu and correct docs/operations.md"
    );
}

/// A member added to a group on Tansu is given its share within seconds.
/// (A member killed with `kill -9` is not expired by Tansu 0.6.0: its
/// partitions wait for a member to join; docs/operations.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_an_added_member_is_given_its_share_within_seconds() {
    let redis = redis_server();
    let kafka = Kafka::on(BrokerKind::Tansu, 6);
    let prefix = random_name("grp");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let a = Consumer::start(&env);
    let b = Consumer::start(&env);
    let each = wait_sharing(
        "two members sharing the partitions",
        &[&a, &b],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(each, vec![6, 6]);
    let c = Consumer::start(&env);
    let started = Instant::now();
    let each = wait_sharing(
        "the added member given its share",
        &[&a, &b, &c],
        Duration::from_secs(30),
    )
    .await;
    let added = started.elapsed();
    assert_eq!(each, vec![4, 4, 4]);
    println!(
        "faults: on Tansu, an added member had its share after {:.1} s",
        added.as_secs_f64()
    );
}

/// A member that leaves (SIGTERM: the service drains, commits and sends
/// LeaveGroup) hands its partitions to the others within seconds on Tansu,
/// and the counts stay exact through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_a_member_that_leaves_hands_its_partitions_over_and_counts_stay_exact() {
    let redis = redis_server();
    let kafka = Kafka::on(BrokerKind::Tansu, 6);
    let prefix = random_name("leave");
    let env = consumer_env(&kafka, &redis.url, &prefix, &random_name("g"));
    let producer = fast_producer(&kafka);
    let topic = Topics::of(&kafka);
    let stream =
        tokio::spawn(async move { produce(&producer, &topic, 40_000, 2_000.0, 41, None).await });
    let store = store_for(&redis.url, &prefix).await;
    let a = Consumer::start(&env);
    let b = Consumer::start(&env);
    let c = Consumer::start(&env);
    let each = wait_sharing(
        "three members sharing the partitions",
        &[&a, &b, &c],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(each, vec![4, 4, 4]);
    assert!(wait_progress(&store, 0, 2_000, 40_000).await);
    let left = Instant::now();
    c.terminate();
    let each = wait_sharing(
        "the two left sharing the partitions",
        &[&a, &b],
        Duration::from_secs(30),
    )
    .await;
    let handed_over = left.elapsed();
    assert_eq!(each, vec![6, 6]);
    let produced = stream.await.unwrap();
    let v = verify(&store, &produced, Duration::from_secs(120)).await;
    report(
        "on Tansu, 3 consumers, 1 left",
        &v,
        &format!(
            "partitions handed over {:.1} s after SIGTERM",
            handed_over.as_secs_f64()
        ),
    );
    assert_exact(&v);
}
