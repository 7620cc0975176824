//! The two renderings of [`Stats`]: the JSON status document and the OpenMetrics text.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Source, SourceCounts, Stats};

/// One label of a labelled family, e.g. `source="http"`.
type Labels = Vec<(String, String)>;

impl Stats {
    /// The status document.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain structs of numbers and string-keyed maps always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The OpenMetrics text exposition (what Prometheus scrapes), built by
    /// `prometheus-client` from this snapshot. Counter families get the `_total` suffix.
    pub fn to_prometheus(&self) -> String {
        let mut registry = Registry::default();
        let c = &self.counters;
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
            let metric = Gauge::<i64, AtomicI64>::default();
            metric.set(i64::try_from(value).unwrap_or(i64::MAX));
            registry.register(name, help, metric);
        };
        let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
            let metric = Counter::<u64, AtomicU64>::default();
            metric.inc_by(value);
            registry.register(name, help, metric);
        };
        let labelled_gauge =
            |registry: &mut Registry,
             name: &str,
             help: &str,
             label: &str,
             samples: &mut dyn Iterator<Item = (String, u64)>| {
                let family = Family::<Labels, Gauge>::default();
                for (value, n) in samples {
                    family
                        .get_or_create(&vec![(label.to_owned(), value)])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                registry.register(name, help, family);
            };
        let labelled_counter =
            |registry: &mut Registry,
             name: &str,
             help: &str,
             label: &str,
             samples: &mut dyn Iterator<Item = (String, u64)>| {
                let family = Family::<Labels, Counter>::default();
                for (value, n) in samples {
                    family
                        .get_or_create(&vec![(label.to_owned(), value)])
                        .inc_by(n);
                }
                registry.register(name, help, family);
            };
        let per_source = |counts: &SourceCounts| {
            Source::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), counts.get(*s)))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let r = &mut registry;
        gauge(
            r,
            "relay_uptime_seconds",
            "Seconds since the relay started",
            self.uptime_seconds,
        );
        gauge(
            r,
            "relay_sessions",
            "Open subscriber sessions",
            self.sessions as u64,
        );
        gauge(
            r,
            "relay_streams",
            "Open SSE streams (included in relay_sessions)",
            self.streams as u64,
        );
        labelled_gauge(
            r,
            "relay_subscriptions",
            "Subscriptions per exchange",
            "exchange",
            &mut self
                .subscriptions
                .iter()
                .map(|(e, n)| (e.clone(), *n as u64)),
        );
        labelled_counter(
            r,
            "relay_events_in",
            "Events accepted, by source",
            "source",
            &mut per_source(&c.events_in),
        );
        labelled_counter(
            r,
            "relay_events_rejected",
            "Events refused, by source",
            "source",
            &mut per_source(&c.events_rejected),
        );
        counter(
            r,
            "relay_events_duplicate",
            "Linked events dropped as already seen",
            c.events_duplicate,
        );
        counter(
            r,
            "relay_events_queued",
            "Event frames queued to sessions",
            c.events_queued,
        );
        counter(
            r,
            "relay_frames_out",
            "Frames handed to Mongrel2",
            c.frames_out,
        );
        counter(
            r,
            "relay_payloads_out",
            "Coalesced payloads handed to Mongrel2",
            c.payloads_out,
        );
        counter(
            r,
            "relay_lagged",
            "Lagged notices sent to slow sessions",
            c.lagged,
        );
        counter(
            r,
            "relay_dropped",
            "Event frames dropped from full outboxes",
            c.dropped,
        );
        labelled_gauge(
            r,
            "relay_history",
            "History held: keys, events and bytes",
            "kind",
            &mut named(&[
                ("keys", self.history.keys as u64),
                ("events", self.history.events as u64),
                ("bytes", self.history.bytes as u64),
            ]),
        );
        counter(
            r,
            "relay_forward_dropped",
            "Events not forwarded to linked relays (forward queue full)",
            c.forward_dropped,
        );
        counter(
            r,
            "relay_auth_failures",
            "Authenticate attempts refused (wrong token or too many attempts)",
            c.auth_failures,
        );
        counter(
            r,
            "relay_backbone_events",
            "Events read back from RabbitMQ and delivered",
            c.backbone_in,
        );
        counter(
            r,
            "relay_backbone_rejected",
            "Messages read from RabbitMQ that were not valid events",
            c.backbone_rejected,
        );
        counter(
            r,
            "relay_resumes_unrecovered",
            "Resumes answered recovered:false (another epoch, or history no longer kept)",
            c.resumes_unrecovered,
        );
        counter(
            r,
            "relay_overflow_closes",
            "Sessions closed because their outbox overflowed",
            c.overflowed,
        );
        if let Some(rpc) = &self.rpc {
            gauge(
                r,
                "relay_rpc_in_flight",
                "RPC calls waiting for their backend",
                rpc.in_flight as u64,
            );
            labelled_counter(
                r,
                "relay_rpc_calls",
                "RPC calls by outcome (sent counts every call handed to a backend)",
                "outcome",
                &mut named(&[
                    ("sent", rpc.calls),
                    ("result", rpc.results),
                    ("error", rpc.errors),
                    ("timeout", rpc.timeouts),
                    ("refused", rpc.refused),
                    ("late", rpc.late),
                    ("orphaned", rpc.orphaned),
                ]),
            );
        }
        if let Some(amqp) = &self.amqp {
            gauge(
                r,
                "relay_amqp_connected",
                "1 while the RabbitMQ connection is up",
                u64::from(amqp.connected),
            );
            counter(
                r,
                "relay_amqp_outages",
                "RabbitMQ connections failed or lost",
                amqp.outages,
            );
            labelled_counter(
                r,
                "relay_amqp_publishes",
                "Events handed to RabbitMQ, by outcome",
                "outcome",
                &mut named(&[
                    ("published", amqp.published),
                    ("confirmed", amqp.confirmed),
                    ("failed", amqp.failed),
                ]),
            );
        }
        if let Some(links) = &self.links {
            labelled_gauge(
                r,
                "relay_link_peers",
                "Linked relays this relay subscribes to, by state",
                "state",
                &mut ["connecting", "verified", "stale"]
                    .into_iter()
                    .map(|state| {
                        let n = links.peers.iter().filter(|p| p.state == state).count();
                        (state.to_owned(), n as u64)
                    }),
            );
            gauge(
                r,
                "relay_link_subscribers",
                "Linked relays subscribed to this relay",
                links.subscribers.len() as u64,
            );
            counter(
                r,
                "relay_link_published",
                "Events published to linked relays",
                links.published,
            );
            counter(
                r,
                "relay_link_missed",
                "Events linked relays published that never arrived here",
                links.peers.iter().map(|p| p.missed).sum(),
            );
            labelled_counter(
                r,
                "relay_link_refused",
                "Link subscribers and messages refused for not proving the link secret",
                "side",
                &mut [
                    ("subscriber".to_owned(), links.refused),
                    (
                        "publisher".to_owned(),
                        links.peers.iter().map(|p| p.refused).sum(),
                    ),
                ]
                .into_iter(),
            );
        }
        if let Some(mongrel2) = &self.mongrel2 {
            labelled_gauge(
                r,
                "relay_mongrel2_connections",
                "Client connections Mongrel2 has open, by control port (last answer)",
                "endpoint",
                &mut mongrel2.iter().filter_map(|m| {
                    let open = m.open_connections?;
                    Some((m.endpoint.clone(), open as u64))
                }),
            );
        }
        if let Some(group) = &self.group {
            gauge(
                r,
                "relay_group_members",
                "Live members of this relay's group, itself included",
                group.members.len() as u64,
            );
            gauge(
                r,
                "relay_group_synced",
                "1 while the members agree on the numbering (publishes are held until they do)",
                u64::from(group.synced),
            );
            labelled_gauge(
                r,
                "relay_group_waiting",
                "Publishes held until synced, forwarded and not yet confirmed, and events \
                 waiting for the peers' acknowledgements",
                "kind",
                &mut named(&[
                    ("held", group.held as u64),
                    ("unconfirmed", group.unconfirmed as u64),
                    ("awaiting", group.awaiting as u64),
                ]),
            );
            labelled_counter(
                r,
                "relay_group_events",
                "Group traffic by kind: events numbered here, publishes forwarded to and \
                 received from members, events received, repairs sent, forwards resent, \
                 publishes dropped, events shown without every ack",
                "kind",
                &mut named(&[
                    ("sequenced", group.sequenced),
                    ("forwarded", group.forwarded),
                    ("received_publishes", group.received_publishes),
                    ("received_events", group.received_events),
                    ("repairs_sent", group.repairs_sent),
                    ("resent", group.resent),
                    ("dropped", group.dropped),
                    ("ack_timeouts", group.ack_timeouts),
                ]),
            );
            counter(
                r,
                "relay_group_membership_changes",
                "Times the live members changed",
                group.membership_changes,
            );
            counter(
                r,
                "relay_group_sync_timeouts",
                "Times the members did not agree within the sync timeout",
                group.sync_timeouts,
            );
        }
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail, and every name above is a valid metric name.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Samples whose label values are fixed words.
fn named<'a>(samples: &'a [(&'a str, u64)]) -> impl Iterator<Item = (String, u64)> + 'a {
    samples.iter().map(|&(value, n)| (value.to_owned(), n))
}
