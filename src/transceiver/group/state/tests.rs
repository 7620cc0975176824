use super::*;

const SENDER: &str = "75226238-c5fe-4cb0-ac5b-877fd841e97e";

fn frame(id: u64) -> Vec<u8> {
    let headers = r#"{"METHOD":"WEBSOCKET","PATH":"/","FLAGS":"0x81"}"#;
    format!("{SENDER} {id} / {}:{headers},2:hi,", headers.len()).into_bytes()
}

fn disconnect(id: u64) -> Vec<u8> {
    let headers = r#"{"METHOD":"JSON","PATH":"@*"}"#;
    let body = r#"{"type":"disconnect"}"#;
    format!(
        "{SENDER} {id} @* {}:{headers},{}:{body},",
        headers.len(),
        body.len()
    )
    .into_bytes()
}

/// Delivers every pending send between the members until nothing moves.
fn settle(members: &mut [Group], now: Instant) {
    loop {
        let mut moved = false;
        for i in 0..members.len() {
            while let Some((endpoint, frames)) = members[i].poll_send() {
                moved = true;
                if let Some(to) = members.iter_mut().find(|m| m.endpoint == endpoint) {
                    to.on_peer(&frames, now);
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn three(now: Instant) -> Vec<Group> {
    let endpoints: Vec<String> = (1..=3).map(|i| format!("inproc://m{i}")).collect();
    let timing = GroupTiming::for_ping_interval(Some(Duration::from_secs(1)));
    let mut members: Vec<Group> = endpoints
        .iter()
        .map(|endpoint| Group::new(endpoint, &endpoints, timing, now))
        .collect();
    for _ in 0..2 {
        for member in &mut members {
            member.handle_timeout(now);
        }
        settle(&mut members, now);
    }
    members
}

#[test]
fn members_find_each_other_and_agree_on_owners() {
    let now = Instant::now();
    let members = three(now);
    assert!(members.iter().all(|m| m.live_members() == 3));
    for id in 0..100 {
        let conn = ConnId::new(SENDER, id);
        let owners: Vec<String> = members.iter().map(|m| m.owner_of(&conn)).collect();
        assert!(owners.iter().all(|o| *o == owners[0]), "{owners:?}");
    }
}

#[test]
fn a_frame_reaches_its_owner_and_disconnects_reach_every_table() {
    let now = Instant::now();
    let mut members = three(now);
    let conn = ConnId::new(SENDER, 7);
    let owner = members[0].owner_of(&conn);
    let landing = members.iter().position(|m| m.name != owner).unwrap();
    let owning = members.iter().position(|m| m.name == owner).unwrap();
    members[landing].on_mongrel2(frame(7));
    assert_eq!(members[landing].poll_local(), None);
    settle(&mut members, now);
    assert_eq!(members[owning].poll_local(), Some(Local::Handle(frame(7))));
    members[owning].opened(conn.clone(), &frame(7));
    settle(&mut members, now);
    assert!(members.iter().all(|m| m.session_count() == 1));
    members[landing].on_mongrel2(disconnect(7));
    settle(&mut members, now);
    // The notice reaches the owner's core, which closes the session and says so.
    while let Some(local) = members[owning].poll_local() {
        assert_eq!(
            local,
            Local::Notice {
                conn: conn.clone(),
                message: disconnect(7)
            }
        );
    }
    members[owning].closed(&conn);
    settle(&mut members, now);
    assert!(members.iter().all(|m| m.session_count() == 0));
    // A frame that went round another member arrives late: it does not revive the session.
    members[owning].on_mongrel2(frame(7));
    assert_eq!(members[owning].poll_local(), None);
}

#[test]
fn a_dead_owners_sessions_and_unacknowledged_forwards_move_to_a_survivor() {
    let now = Instant::now();
    let mut members = three(now);
    let conn = ConnId::new(SENDER, 11);
    let owner = members[0].owner_of(&conn);
    let owning = members.iter().position(|m| m.name == owner).unwrap();
    members[owning].opened(conn.clone(), &frame(11));
    settle(&mut members, now);
    let dead = members.remove(owning);
    // A forward the owner never acknowledged: it died with it.
    members[0].on_mongrel2(frame(11));
    while members[0].poll_send().is_some() {}
    // The survivors keep hearing each other; the dead member stays silent.
    let later = now + Duration::from_secs(3);
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    for member in &mut members {
        for name in &names {
            member.heard(name, later);
        }
        member.handle_timeout(later);
    }
    assert!(members.iter().all(|m| m.live_members() == 2));
    let new_owner = members[0].owner_of(&conn);
    assert_ne!(new_owner, dead.name);
    let adopting = members.iter().position(|m| m.name == new_owner).unwrap();
    let mut locals = Vec::new();
    while let Some(local) = members[adopting].poll_local() {
        locals.push(local);
    }
    settle(&mut members, later);
    while let Some(local) = members[adopting].poll_local() {
        locals.push(local);
    }
    assert!(
        matches!(locals.first(), Some(Local::Adopt(_))),
        "{locals:?}"
    );
    assert!(locals.contains(&Local::Handle(frame(11))), "{locals:?}");
}

#[test]
fn application_messages_reach_live_members_only() {
    let now = Instant::now();
    let mut members = three(now);
    let names = members[0].member_names();
    assert_eq!(
        names,
        members[2].member_names(),
        "every member lists the same"
    );
    assert_eq!(names.len(), 3);
    let to = members[1].name().to_owned();
    assert!(members[0].send_app(&to, b"one".to_vec()));
    assert!(members[0].send_app(&to, b"two".to_vec()));
    assert!(!members[0].send_app("tcp://nobody:1#0", b"x".to_vec()));
    settle(&mut members, now);
    let from = members[0].name().to_owned();
    assert_eq!(members[1].poll_app(), Some((from.clone(), b"one".to_vec())));
    assert_eq!(members[1].poll_app(), Some((from, b"two".to_vec())));
    assert_eq!(members[1].poll_app(), None);
    // A member this one never heard a heartbeat from is not part of the application's view.
    let stranger = PeerMessage::App {
        from: "tcp://stranger:1#1".into(),
        body: b"x".to_vec(),
    };
    members[1].on_peer(&stranger.encode(), now);
    assert_eq!(members[1].poll_app(), None);
}
