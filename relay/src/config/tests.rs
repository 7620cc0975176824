use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn default_has_public_calls_agents_and_token_only_admin_without_secrets() {
    let c = Config::from_parts(None, &no_env).unwrap();
    let p = Pattern::parse("x");
    assert_eq!(c.exchange("calls").unwrap().1.check(&p, None), Ok(()));
    assert_eq!(c.exchange("agents").unwrap().1.check(&p, None), Ok(()));
    assert_eq!(
        c.exchange("admin").unwrap().1.check(&p, None),
        Err(ErrorName::AuthRequired)
    );
    assert!(c.tokens.is_empty());
    assert_eq!(c.publish_token, None);
    assert!(!c.publish_authorized(Some("Bearer ")));
    assert!(!c.publish_authorized(None));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.subscriptions_per_session, 100);
    assert_eq!(c.limits.message_size, 65536);
    assert_eq!(c.limits.history_per_key, 100);
    assert_eq!(c.limits.max_hops, 8);
    assert_eq!(c.timing.rpc_timeout(), Duration::from_secs(5));
    assert_eq!(c.timing.sse_heartbeat(), Duration::from_secs(15));
    assert_eq!(c.timing.link_heartbeat(), Duration::from_secs(1));
}

#[test]
fn env_tokens_and_publish_token() {
    let env = |k: &str| match k {
        "RELAY_TOKENS" => Some(" admin:s3cret-token , ops:o:p-token-1 ".to_owned()),
        "RELAY_PUBLISH_TOKEN" => Some("pub-token".to_owned()),
        _ => None,
    };
    let c = Config::from_parts(None, &env).unwrap();
    assert_eq!(c.token_name("s3cret-token"), Some("admin"));
    assert_eq!(c.token_name("o:p-token-1"), Some("ops"));
    assert_eq!(c.token_name("s3cret-toke"), None);
    assert!(c.publish_authorized(Some("Bearer pub-token")));
    assert!(!c.publish_authorized(Some("Bearer pub-toke")));
    assert!(!c.publish_authorized(Some("pub-token")));
    let rule = &c.exchange("admin").unwrap().1;
    assert_eq!(rule.check(&Pattern::parse("*"), Some("admin")), Ok(()));
    assert_eq!(
        rule.check(&Pattern::parse("*"), Some("ops")),
        Err(ErrorName::SubscriptionDenied)
    );
}

#[test]
fn bad_env_tokens_are_an_error_that_hides_the_value() {
    for bad in ["zz", "zz:", ":qq", "a:b,qq"] {
        let env = |k: &str| (k == "RELAY_TOKENS").then(|| bad.to_owned());
        let err = Config::from_parts(None, &env).unwrap_err();
        assert!(matches!(err, ConfigError::EnvTokens(_)), "{bad}");
        assert!(!err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn file_config_exchanges_tokens_limits_actions() {
    let text = r#"{
        "exchanges": {
            "calls": {"public": true},
            "queues": {"public": true, "prefixes": ["queue."]},
            "admin": {"tokens": ["ops"], "prefixes": ["ops."]}
        },
        "tokens": {"ops": "file-token"},
        "publish_token": "p1-token",
        "limits": {"subscriptions_per_session": 5, "history_per_key": 3},
        "actions": {"moveCar": "tcp://127.0.0.1:9100"},
        "timing": {"rpc_timeout_ms": 250}
    }"#;
    let env = |k: &str| (k == "RELAY_TOKENS").then(|| "ops:env-token,x:y-token-1".to_owned());
    let c = Config::from_parts(Some(text), &env).unwrap();
    assert!(
        c.exchange("agents").is_none(),
        "file exchanges replace the default set"
    );
    assert_eq!(
        c.token_name("env-token"),
        Some("ops"),
        "env overrides the file"
    );
    assert_eq!(c.token_name("file-token"), None);
    assert_eq!(c.token_name("y-token-1"), Some("x"));
    assert!(c.publish_authorized(Some("Bearer p1-token")));
    assert_eq!(c.limits.subscriptions_per_session, 5);
    assert_eq!(c.limits.history_per_key, 3);
    assert_eq!(c.limits.message_size, 65536, "unset limits keep defaults");
    assert_eq!(c.actions["moveCar"], "tcp://127.0.0.1:9100");
    assert_eq!(c.timing.rpc_timeout_ms, 250);
    assert_eq!(
        c.timing.sse_heartbeat_ms, 15_000,
        "unset timers keep defaults"
    );

    let q = &c.exchange("queues").unwrap().1;
    assert_eq!(q.check(&Pattern::parse("queue.sales"), None), Ok(()));
    assert_eq!(q.check(&Pattern::parse("queue.*"), None), Ok(()));
    assert_eq!(
        q.check(&Pattern::parse("*"), None),
        Err(ErrorName::SubscriptionDenied)
    );
    assert_eq!(
        q.check(&Pattern::parse("other"), None),
        Err(ErrorName::SubscriptionDenied)
    );
    let a = &c.exchange("admin").unwrap().1;
    assert_eq!(
        a.check(&Pattern::parse("ops.x"), None),
        Err(ErrorName::AuthRequired)
    );
    assert_eq!(a.check(&Pattern::parse("ops.x"), Some("ops")), Ok(()));
    assert_eq!(
        a.check(&Pattern::parse("x"), Some("ops")),
        Err(ErrorName::SubscriptionDenied)
    );
    assert_eq!(
        a.check(&Pattern::parse("ops.x"), Some("x")),
        Err(ErrorName::SubscriptionDenied)
    );
}

#[test]
fn file_env_publish_token_overrides() {
    let env = |k: &str| (k == "RELAY_PUBLISH_TOKEN").then(|| "env-token".to_owned());
    let c = Config::from_parts(Some(r#"{"publish_token":"file-token"}"#), &env).unwrap();
    assert!(c.publish_authorized(Some("Bearer env-token")));
    assert!(
        c.exchange("calls").is_some(),
        "no exchanges key keeps the defaults"
    );
}

#[test]
fn invalid_configs_are_refused() {
    for bad in [
        r#"{"exchanges": {"calls": {"publik": true}}}"#,
        r#"{"unknown": 1}"#,
        r#"{"limits": {"message_size": 0}}"#,
        r#"{"limits": {"message_size": 5000000}}"#,
        r#"{"actions": {"Subscribe": "tcp://127.0.0.1:1"}}"#,
        r#"{"actions": {"moveCar": "nowhere"}}"#,
        r#"{"tokens": {"a": ""}}"#,
        r#"{"exchanges": {"": {"public": true}}}"#,
        r#"{"publish_token": ""}"#,
        r#"{"limits": {"max_hops": 256}}"#,
        r#"{"limits": {"rpc_calls_per_session": 0}}"#,
        r#"{"timing": {"rpc_timeout_ms": 0}}"#,
        r#"{"timing": {"sse_heartbeat_ms": 86400001}}"#,
        r#"{"timing": {"link_hello_ms": 5}}"#,
        r#"{"exchanges": {"calls": {"public_routing_keys": ["q"]}}}"#,
        r#"{"exchanges": {"calls": {"public": true, "prefixes": ["queue."], "public_routing_keys": ["*"]}}}"#,
        "not json",
    ] {
        assert!(Config::from_parts(Some(bad), &no_env).is_err(), "{bad}");
    }
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("relay-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.json");
    std::fs::write(&path, r#"{"exchanges":{"only":{"public":true}}}"#).unwrap();
    let c = Config::load(Some(&path), &no_env).unwrap();
    assert_eq!(
        c.exchanges.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["only"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(
        Config::load(Some(&path), &no_env),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn redacted_summary_has_no_secrets() {
    let env = |k: &str| match k {
        "RELAY_TOKENS" => Some("admin:top-secret".to_owned()),
        "RELAY_PUBLISH_TOKEN" => Some("pub-secret".to_owned()),
        _ => None,
    };
    let c = Config::from_parts(None, &env).unwrap();
    let text = c.redacted().to_string();
    assert!(
        !text.contains("top-secret") && !text.contains("pub-secret"),
        "{text}"
    );
    assert!(text.contains("admin"));
}

#[test]
fn tokens_shorter_than_the_minimum_are_refused_without_naming_them() {
    for (text, env_tokens) in [
        (r#"{"tokens": {"ops": "tiny1"}}"#, None),
        (r#"{"publish_token": "tiny1"}"#, None),
        ("{}", Some("ops:tiny1")),
        (
            r#"{"tokens": {"ops": "long-enough"}, "limits": {"min_token_length": 16}}"#,
            None,
        ),
    ] {
        let env = |k: &str| (k == "RELAY_TOKENS").then(|| env_tokens.unwrap_or("").to_owned());
        let err = Config::from_parts(Some(text), &env).unwrap_err();
        assert!(err.to_string().contains("min_token_length"), "{err}");
        assert!(!err.to_string().contains("tiny1"), "{err}");
    }
    let ok = r#"{"tokens": {"ops": "tiny1"}, "limits": {"min_token_length": 5}}"#;
    assert!(Config::from_parts(Some(ok), &|_| None).is_ok());
}

#[test]
fn rpc_calls_are_shared_fairly_when_the_total_budget_is_tight() {
    let c = Config::from_parts(
        Some(r#"{"limits": {"rpc_calls_per_session": 256, "rpc_calls_total": 1024}}"#),
        &|_| None,
    )
    .unwrap();
    let l = &c.limits;
    assert_eq!(
        l.rpc_share(1),
        256,
        "the per-session limit holds when alone"
    );
    assert_eq!(l.rpc_share(4), 256);
    // Sixteen sessions: each may hold 64, so no four of them can starve the other twelve.
    assert_eq!(l.rpc_share(16), 64);
    assert_eq!(l.rpc_share(16) * 16, 1024);
    assert_eq!(
        l.rpc_share(5000),
        1,
        "every session may always try one call"
    );
    assert_eq!(Limits::default().rpc_calls_total, 65_536);
}

#[test]
fn public_routing_keys_are_announced_per_exchange() {
    let c = Config::from_parts(
        Some(
            r#"{"exchanges": {"calls": {"public": true, "public_routing_keys": ["queue.*", "vip"]},
                              "agents": {"public": true, "public_routing_keys": ["*"]},
                              "admin": {"tokens": ["admin"]}}}"#,
        ),
        &no_env,
    )
    .unwrap();
    assert_eq!(
        c.public_subscriptions(),
        serde_json::json!([{"exchange":"agents","routing_keys":["*"]},
                           {"exchange":"calls","routing_keys":["queue.*","vip"]}])
    );
    assert_eq!(
        Config::default().public_subscriptions(),
        serde_json::json!([{"exchange":"agents","routing_keys":["*"]},
                           {"exchange":"calls","routing_keys":["*"]}])
    );
}

#[test]
fn stream_retention_defaults_parses_and_is_checked() {
    let c = Config::from_parts(None, &no_env).unwrap();
    assert_eq!(
        c.stream,
        Stream {
            max_age: "1D".into(),
            max_bytes: 1 << 30
        }
    );
    let c = Config::from_parts(
        Some(r#"{"stream":{"max_age":"7D","max_bytes":1000}}"#),
        &no_env,
    )
    .unwrap();
    assert_eq!(
        (c.stream.max_age.as_str(), c.stream.max_bytes),
        ("7D", 1000)
    );
    for bad in [
        r#"{"stream":{"max_age":"7d"}}"#,
        r#"{"stream":{"max_age":"D"}}"#,
        r#"{"stream":{"max_age":""}}"#,
        r#"{"stream":{"max_age":"1234567890D"}}"#,
        r#"{"stream":{"max_bytes":0}}"#,
        r#"{"stream":{"max_bytes":18446744073709551615}}"#,
    ] {
        assert!(
            matches!(
                Config::from_parts(Some(bad), &no_env),
                Err(ConfigError::Invalid(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        Config::from_parts(Some(r#"{"stream":{"ttl":1}}"#), &no_env),
        Err(ConfigError::Json(_))
    ));
}

#[test]
fn link_secret_from_config_env_or_file_and_never_short_or_printed() {
    let long = "x".repeat(MIN_LINK_SECRET);
    let from_file = format!(r#"{{"link_secret": "{long}"}}"#);
    let c = Config::from_parts(Some(&from_file), &no_env).unwrap();
    assert_eq!(
        c.link_secret.as_ref().map(LinkSecret::as_bytes),
        Some(long.as_bytes())
    );
    let env_secret = "y".repeat(40);
    let env = |k: &str| (k == "RELAY_LINK_SECRET").then(|| env_secret.clone());
    let mut c = Config::from_parts(Some(&from_file), &env).unwrap();
    assert_eq!(
        c.link_secret.as_ref().map(LinkSecret::as_bytes),
        Some(env_secret.as_bytes()),
        "the environment wins over the file"
    );
    assert!(!format!("{c:?}").contains(&env_secret));
    assert!(!c.redacted().to_string().contains(&env_secret));
    assert_eq!(c.redacted()["link_secret"], "set");
    // --link-secret-file wins over both; one trailing line break is not part of it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{}\r\n", "z".repeat(32))).unwrap();
    c.read_link_secret(&path).unwrap();
    assert_eq!(
        c.link_secret.as_ref().map(LinkSecret::as_bytes),
        Some("z".repeat(32).as_bytes())
    );
    std::fs::write(&path, "short\n").unwrap();
    let err = c.read_link_secret(&path).unwrap_err();
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    assert!(c.read_link_secret(&dir.path().join("missing")).is_err());
    for short in ["", "0123456789abcdef0123456789abcde"] {
        let json = format!(r#"{{"link_secret": "{short}"}}"#);
        let err = Config::from_parts(Some(&json), &no_env).unwrap_err();
        assert!(!short.is_empty() || err.to_string().contains("link secret"));
        assert!(
            short.is_empty() || !err.to_string().contains(short),
            "{err}"
        );
        let env = |k: &str| (k == "RELAY_LINK_SECRET").then(|| short.to_owned());
        assert!(Config::from_parts(None, &env).is_err());
    }
}

#[test]
fn status_token_guards_status_only_when_set() {
    let c = Config::from_parts(None, &no_env).unwrap();
    assert!(c.status_authorized(None));
    let c = Config::from_parts(Some(r#"{"status_token": "status-token"}"#), &no_env).unwrap();
    assert!(!c.status_authorized(None));
    assert!(!c.status_authorized(Some("Bearer status-toke")));
    assert!(!c.status_authorized(Some("status-token")));
    assert!(c.status_authorized(Some("Bearer status-token")));
    let env = |k: &str| (k == "RELAY_STATUS_TOKEN").then(|| "short".to_owned());
    let err = Config::from_parts(None, &env).unwrap_err();
    assert!(err.to_string().contains("status_token"), "{err}");
    assert!(Config::from_parts(Some(r#"{"status_token": ""}"#), &no_env).is_err());
}

#[test]
fn link_queues_are_sized_from_bytes() {
    let l = Limits::default();
    // 16 MiB over 64 KiB + 1 KiB events.
    assert_eq!(l.link_queue_messages(), 252);
    let small = Limits {
        link_queue_bytes: 1,
        ..Limits::default()
    };
    assert_eq!(small.link_queue_messages(), MIN_LINK_QUEUE as i32);
    let err =
        Config::from_parts(Some(r#"{"limits": {"link_queue_bytes": 0}}"#), &no_env).unwrap_err();
    assert!(err.to_string().contains("link_queue_bytes"), "{err}");
}
