use super::*;

fn sample() -> Stats {
    let mut counters = Counters::default();
    counters.events_in.bump(Source::Inject);
    counters.events_in.bump(Source::Http);
    counters.events_in.bump(Source::Http);
    counters.frames_out = 7;
    Stats {
        uptime_seconds: 12,
        sessions: 3,
        streams: 1,
        subscriptions: [("calls".to_owned(), 2), ("we\"ird\\\n".to_owned(), 1)]
            .into_iter()
            .collect(),
        counters,
        history: HistorySize {
            keys: 1,
            events: 2,
            bytes: 30,
        },
        rpc: Some(RpcStats {
            calls: 4,
            ..RpcStats::default()
        }),
        links: Some(LinkStats {
            peers: vec![PeerStats {
                endpoint: "tcp://127.0.0.1:1".into(),
                relay: None,
                state: "connecting",
                verified: false,
                events: 0,
                missed: 2,
                restarts: 0,
                refused: 3,
            }],
            refused: 1,
            ..LinkStats::default()
        }),
        amqp: Some(AmqpStats {
            outages: 1,
            failed: 3,
            ..AmqpStats::default()
        }),
        mongrel2: None,
        group: Some(GroupStats {
            member: "a".into(),
            members: vec!["a".into(), "b".into()],
            synced: true,
            awaiting: 2,
            sequenced: 5,
            repairs_sent: 1,
            membership_changes: 3,
            ..GroupStats::default()
        }),
    }
}

#[test]
fn prometheus_exposition_has_help_type_and_samples() {
    let text = sample().to_prometheus();
    assert!(text.contains("# HELP relay_sessions Open subscriber sessions.\n# TYPE relay_sessions gauge\nrelay_sessions 3\n"));
    assert!(text.contains("relay_events_in_total{source=\"http\"} 2\n"));
    assert!(text.contains("relay_events_in_total{source=\"link\"} 0\n"));
    assert!(text.contains("relay_subscriptions{exchange=\"calls\"} 2\n"));
    assert!(text.contains("relay_subscriptions{exchange=\"we\\\"ird\\\\\\n\"} 1\n"));
    assert!(text.contains("relay_history{kind=\"bytes\"} 30\n"));
    assert!(text.contains("# TYPE relay_frames_out counter\nrelay_frames_out_total 7\n"));
    assert!(text.contains("relay_streams 1\n"));
    assert!(text.contains("relay_rpc_calls_total{outcome=\"sent\"} 4\n"));
    assert!(text.contains("relay_link_peers{state=\"connecting\"} 1\n"));
    assert!(text.contains("relay_link_missed_total 2\n"));
    assert!(text.contains("relay_amqp_connected 0\n"));
    assert!(text.contains("relay_amqp_outages_total 1\n"));
    assert!(text.contains("relay_amqp_publishes_total{outcome=\"failed\"} 3\n"));
    assert!(text.contains("relay_link_refused_total{side=\"subscriber\"} 1\n"));
    assert!(text.contains("relay_link_refused_total{side=\"publisher\"} 3\n"));
    assert!(text.contains("relay_group_members 2\n"));
    assert!(text.contains("relay_group_synced 1\n"));
    assert!(text.contains("relay_group_waiting{kind=\"awaiting\"} 2\n"));
    assert!(text.contains("relay_group_events_total{kind=\"sequenced\"} 5\n"));
    assert!(text.contains("relay_group_events_total{kind=\"repairs_sent\"} 1\n"));
    assert!(text.contains("relay_group_membership_changes_total 3\n"));
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Every sample line belongs to a family declared just before it.
    let mut declared = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared = rest.split(' ').next().map(str::to_owned);
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert_eq!(Some(family.to_owned()), declared, "{line}");
            assert!(
                line.rsplit(' ').next().unwrap().parse::<u64>().is_ok(),
                "{line}"
            );
        }
    }
}

#[test]
fn status_json_shape() {
    let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
    assert_eq!(v["sessions"], 3);
    assert_eq!(v["uptime_seconds"], 12);
    assert_eq!(v["subscriptions"]["calls"], 2);
    assert_eq!(v["events_in"]["http"], 2);
    assert_eq!(v["events_in"]["pull"], 0);
    assert_eq!(v["frames_out"], 7);
    assert_eq!(v["history"]["events"], 2);
    assert_eq!(v["rpc"]["calls"], 4);
    assert_eq!(v["links"]["peers"][0]["state"], "connecting");
    let mut bare = sample();
    bare.rpc = None;
    bare.links = None;
    let v: serde_json::Value = serde_json::from_slice(&bare.to_json()).unwrap();
    assert!(v.get("rpc").is_none() && v.get("links").is_none(), "{v}");
}
