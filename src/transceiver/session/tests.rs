use super::*;

fn conn(sender: &str, id: u64) -> ConnId {
    ConnId::new(sender, id)
}

#[test]
fn same_id_on_two_servers_are_two_sessions() {
    let mut sessions = Sessions::default();
    assert!(sessions.open(&conn("a", 1)));
    assert!(sessions.open(&conn("b", 1)));
    assert!(!sessions.open(&conn("a", 1)));
    assert_eq!(sessions.len(), 2);
    assert!(sessions.close(&conn("a", 1)));
    assert!(sessions.contains(&conn("b", 1)));
    assert!(!sessions.contains(&conn("a", 1)));
    assert_eq!(sessions.len(), 1);
}

#[test]
fn a_session_silent_for_a_whole_interval_expires() {
    let mut sessions = Sessions::default();
    sessions.open(&conn("a", 1));
    sessions.open(&conn("a", 2));
    let first = sessions.ping_round();
    assert_eq!(first[0].ping.len(), 2);
    assert!(first[0].expired.is_empty());
    assert!(sessions.heard(&conn("a", 2)));
    let second = sessions.ping_round();
    assert_eq!(second[0].expired, vec![1]);
    assert_eq!(second[0].ping, vec![2]);
    assert_eq!(sessions.len(), 1);
    let third = sessions.ping_round();
    assert_eq!(third[0].expired, vec![2]);
    assert_eq!(sessions.len(), 0);
    assert!(sessions.ping_round().is_empty());
}

#[test]
fn with_a_grace_round_a_session_expires_after_two_silent_rounds() {
    let mut sessions = Sessions::default();
    sessions.set_grace(1);
    sessions.open(&conn("a", 1));
    sessions.ping_round();
    assert!(
        sessions.ping_round()[0].expired.is_empty(),
        "one silent round"
    );
    sessions.heard(&conn("a", 1));
    sessions.ping_round();
    assert!(
        sessions.ping_round()[0].expired.is_empty(),
        "heard: counting again"
    );
    assert_eq!(sessions.ping_round()[0].expired, vec![1], "two in a row");
}

#[test]
fn a_session_opened_between_rounds_gets_a_full_interval() {
    let mut sessions = Sessions::default();
    sessions.ping_round();
    sessions.open(&conn("a", 7));
    let round = sessions.ping_round();
    assert_eq!(round[0].ping, vec![7]);
    assert!(round[0].expired.is_empty());
}
