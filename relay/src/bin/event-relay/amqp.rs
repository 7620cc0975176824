//! RabbitMQ as the relay's event backbone (`--amqp URL`), after Myxi: one durable topic
//! exchange per relay exchange (same name), and bound to it with `#` one durable **stream**
//! queue, `event-relay.EXCHANGE`, bounded by the config's `stream.max_age` / `max_bytes`.
//!
//! Every publish path (injector, PULL, HTTP) publishes the checked event into RabbitMQ with
//! publisher confirms instead of delivering it; every relay (the publishing one too)
//! consumes every stream and delivers what it reads, at the position `offset + 1`. Stream
//! offsets are the same for every consumer, so positions, `Resume` and `Last-Event-ID`
//! agree between relays and across restarts (the epoch is `amqp:event-relay`).
//!
//! Threads: the relay's loop is synchronous ZeroMQ, lapin is async. A thread named `amqp`
//! runs lapin on `async-global-executor`; the loop hands it publishes through a bounded
//! channel ([`Backbone::publish`], never blocking: a full queue is an error to the
//! publisher). What RabbitMQ sends back (events, confirms, connection state) goes through
//! one more thread, `amqp-report`, that owns an inproc PUSH socket; the loop watches the
//! PULL end like any other source, so it wakes for it without polling.
//!
//! A lost connection is retried with backoff (100 ms doubling to 5 s); meanwhile publishes
//! are refused (`BackendUnavailable`), never dropped silently, and consumers resume from
//! the offset after the last one read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

/// Publishes waiting for the `amqp` thread before more are refused.
const COMMAND_QUEUE: usize = 4096;
/// Reports waiting for the loop; when full, consumers stop acknowledging, so RabbitMQ stops
/// sending (at most [`PREFETCH`] more per stream).
const REPORT_QUEUE: usize = 4096;
/// Deliveries RabbitMQ may send per stream before they are acknowledged (streams need a
/// prefetch).
const PREFETCH: u16 = 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The epoch of positions read from the streams.
pub const EPOCH: &str = "amqp:event-relay";

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The AMQP URL.
    pub url: String,
    /// Relay exchanges (each gets a RabbitMQ exchange and stream).
    pub exchanges: Vec<String>,
    /// `x-max-age` of the streams.
    pub max_age: String,
    /// `x-max-length-bytes` of the streams.
    pub max_bytes: u64,
    /// Biggest message read from a stream; bigger ones (anyone may publish into the
    /// exchanges) are skipped, not copied around.
    pub max_message: usize,
}

/// The stream queue holding `exchange`'s events.
pub fn stream_name(exchange: &str) -> String {
    format!("event-relay.{exchange}")
}

struct Publish {
    id: u64,
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
}

/// What the `amqp` thread reports to the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// An event read from `exchange`'s stream at `position` (offset + 1).
    Event {
        /// Relay exchange.
        exchange: String,
        /// The routing key it was published with.
        routing_key: String,
        /// Offset + 1.
        position: u64,
        /// The event-input JSON.
        body: Vec<u8>,
    },
    /// Publish `id` was confirmed (`ok`) or refused / lost with the connection.
    Confirmed {
        /// The id [`Backbone::publish`] returned.
        id: u64,
        /// RabbitMQ acknowledged it.
        ok: bool,
    },
    /// Connected, exchanges and streams declared, consumers running.
    Up,
    /// The connection failed or was lost (retrying).
    Down(String),
}

impl Report {
    /// As ZeroMQ message parts.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        match self {
            Report::Event {
                exchange,
                routing_key,
                position,
                body,
            } => vec![
                b"E".to_vec(),
                exchange.as_bytes().to_vec(),
                routing_key.as_bytes().to_vec(),
                position.to_be_bytes().to_vec(),
                body.clone(),
            ],
            Report::Confirmed { id, ok } => vec![
                b"C".to_vec(),
                id.to_be_bytes().to_vec(),
                vec![u8::from(*ok)],
            ],
            Report::Up => vec![b"U".to_vec()],
            Report::Down(why) => vec![b"D".to_vec(), why.as_bytes().to_vec()],
        }
    }

    /// From ZeroMQ message parts; `None` for anything [`Report::encode`] does not make.
    pub fn decode(parts: &[Vec<u8>]) -> Option<Report> {
        let number = |b: &[u8]| Some(u64::from_be_bytes(b.try_into().ok()?));
        match parts {
            [k, e, rk, p, body] if k == b"E" => Some(Report::Event {
                exchange: String::from_utf8(e.clone()).ok()?,
                routing_key: String::from_utf8(rk.clone()).ok()?,
                position: number(p)?,
                body: body.clone(),
            }),
            [k, id, ok] if k == b"C" => Some(Report::Confirmed {
                id: number(id)?,
                ok: ok.first() == Some(&1),
            }),
            [k] if k == b"U" => Some(Report::Up),
            [k, why] if k == b"D" => Some(Report::Down(String::from_utf8_lossy(why).into())),
            _ => None,
        }
    }
}

/// The loop's side of the bridge.
pub struct Backbone {
    commands: flume::Sender<Publish>,
    next_id: u64,
}

impl Backbone {
    /// Starts the `amqp` threads; their reports go to `push` (connected to the PULL the
    /// loop watches).
    pub fn start(settings: Settings, push: zmq::Socket) -> std::io::Result<Backbone> {
        let (commands, queue) = flume::bounded(COMMAND_QUEUE);
        let (report, reports) = flume::bounded::<Report>(REPORT_QUEUE);
        std::thread::Builder::new()
            .name("amqp-report".into())
            .spawn(move || {
                // Ends when the `amqp` thread (every sender) is gone.
                while let Ok(r) = reports.recv() {
                    if let Err(e) = push.send_multipart(r.encode(), 0) {
                        log::warn!("amqp: cannot report to the loop: {e}");
                    }
                }
            })?;
        std::thread::Builder::new()
            .name("amqp".into())
            .spawn(move || async_global_executor::block_on(run(settings, queue, report)))?;
        Ok(Backbone {
            commands,
            next_id: 0,
        })
    }

    /// Queues a publish; its [`Report::Confirmed`] comes with the returned id. `None` when
    /// the queue to the `amqp` thread is full (the publisher should be told).
    pub fn publish(&mut self, exchange: &str, routing_key: &str, body: Vec<u8>) -> Option<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let publish = Publish {
            id,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body,
        };
        self.commands.try_send(publish).ok().map(|()| id)
    }
}

/// Connects, serves, and reconnects with backoff until the loop drops its [`Backbone`].
async fn run(settings: Settings, queue: flume::Receiver<Publish>, report: flume::Sender<Report>) {
    // Per exchange: the next offset to read, kept across reconnections.
    let next: HashMap<String, Arc<AtomicU64>> = settings
        .exchanges
        .iter()
        .map(|e| (e.clone(), Arc::new(AtomicU64::new(0))))
        .collect();
    let mut backoff = BACKOFF_MIN;
    loop {
        match serve(&settings, &next, &queue, &report, &mut backoff).await {
            Ok(()) => return,
            Err(why) => {
                log::warn!("amqp: {why}; retrying in {backoff:?}");
                let _ = report.send_async(Report::Down(why)).await;
            }
        }
        // Publishes that come while there is no connection are refused at once.
        let until = std::time::Instant::now() + backoff;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let refused = futures_lite::future::or(
                async { queue.recv_async().await.ok().map(Some) },
                async {
                    async_io::Timer::after(left).await;
                    Some(None)
                },
            )
            .await;
            match refused {
                None => return,
                Some(None) => break,
                Some(Some(p)) => {
                    let refused = Report::Confirmed {
                        id: p.id,
                        ok: false,
                    };
                    let _ = report.send_async(refused).await;
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life. `Ok` only when the loop is gone.
async fn serve(
    settings: &Settings,
    next: &HashMap<String, Arc<AtomicU64>>,
    queue: &flume::Receiver<Publish>,
    report: &flume::Sender<Report>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let text = |e: lapin::Error| e.to_string();
    let conn = Connection::connect(&settings.url, ConnectionProperties::default())
        .await
        .map_err(text)?;
    let (lost, on_lost) = flume::bounded::<String>(1);
    conn.on_error(move |e| {
        let _ = lost.try_send(e.to_string());
    });
    let publisher = conn.create_channel().await.map_err(text)?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(text)?;
    for exchange in &settings.exchanges {
        declare(&publisher, settings, exchange)
            .await
            .map_err(text)?;
    }
    for (exchange, offset) in next {
        let channel = conn.create_channel().await.map_err(text)?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(text)?;
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongLongInt(i64::try_from(offset.load(Ordering::SeqCst)).unwrap_or(0)),
        );
        let mut consumer = channel
            .basic_consume(
                &stream_name(exchange),
                "event-relay",
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(text)?;
        let (exchange, offset, report) = (exchange.clone(), offset.clone(), report.clone());
        let max_message = settings.max_message;
        async_global_executor::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let Some(at) = stream_offset(&delivery.properties) else {
                    log::warn!("amqp: a delivery on {exchange} without x-stream-offset");
                    continue;
                };
                offset.store(at + 1, Ordering::SeqCst);
                if delivery.data.len() > max_message {
                    log::warn!(
                        "amqp: {} bytes at {exchange}/{at} skipped (over {max_message})",
                        delivery.data.len()
                    );
                } else {
                    let event = Report::Event {
                        exchange: exchange.clone(),
                        routing_key: delivery.routing_key.to_string(),
                        position: at + 1,
                        body: delivery.data.clone(),
                    };
                    if report.send_async(event).await.is_err() {
                        break;
                    }
                }
                // Streams count acknowledgements as credit for more deliveries.
                if delivery.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    log::info!("amqp: connected; {} streams", settings.exchanges.len());
    let _ = report.send_async(Report::Up).await;
    *backoff = BACKOFF_MIN;
    loop {
        let next = futures_lite::future::or(
            async { queue.recv_async().await.map_err(|_| None) },
            async { Err(on_lost.recv_async().await.ok()) },
        )
        .await;
        let p = match next {
            Ok(p) => p,
            Err(None) => return Ok(()),
            Err(Some(why)) => return Err(why),
        };
        let sent = publisher
            .basic_publish(
                &p.exchange,
                &p.routing_key,
                BasicPublishOptions::default(),
                &p.body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await;
        let report = report.clone();
        match sent {
            Ok(confirm) => async_global_executor::spawn(async move {
                let ok = confirm.await.is_ok_and(|c| c.is_ack());
                let _ = report.send_async(Report::Confirmed { id: p.id, ok }).await;
            })
            .detach(),
            Err(e) => {
                let failed = Report::Confirmed {
                    id: p.id,
                    ok: false,
                };
                let _ = report.send_async(failed).await;
                return Err(e.to_string());
            }
        }
    }
}

/// The topic exchange and its stream (idempotent: every relay declares them alike).
async fn declare(
    channel: &lapin::Channel,
    settings: &Settings,
    exchange: &str,
) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    args.insert(
        "x-max-age".into(),
        AMQPValue::LongString(settings.max_age.as_str().into()),
    );
    args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(settings.max_bytes).unwrap_or(i64::MAX)),
    );
    let queue = stream_name(exchange);
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(&queue, options, args).await?;
    channel
        .queue_bind(
            &queue,
            exchange,
            "#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The offset RabbitMQ puts on every message read from a stream.
fn stream_offset(properties: &BasicProperties) -> Option<u64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_garbage_is_refused() {
        for r in [
            Report::Event {
                exchange: "calls".into(),
                routing_key: "q.1".into(),
                position: 42,
                body: b"{}".to_vec(),
            },
            Report::Confirmed { id: 7, ok: true },
            Report::Confirmed { id: 8, ok: false },
            Report::Up,
            Report::Down("gone".into()),
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(&[b"E".to_vec()]), None);
        assert_eq!(Report::decode(&[b"C".to_vec(), vec![1], vec![1]]), None);
    }
}
