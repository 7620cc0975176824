mod common;
use common::{HandlerConf, Mongrel2};
use mongrel2_transceiver::control_port::*;
use mongrel2_transceiver::tnetstring::Dict;

#[test]
fn probe() {
    let m2 = Mongrel2::builder().handler(HandlerConf::new("/h")).start();
    let mut c = ControlPort::new(m2.control_endpoint()).unwrap();
    for cmd in ["help", "time", "uuid", "info"] {
        println!("{cmd}: {:?}", c.call(cmd, Dict::new()));
    }
    println!("net: {:?}", c.status(StatusWhat::Net));
    println!("tasks: {:?}", c.status(StatusWhat::Tasks));
    println!("bad status: {:?}", c.call("status", [("what", "x")].into_iter().collect()));
    println!("nostatus: {:?}", c.call("status", Dict::new()));
    println!("kill 5: {:?}", c.kill(5));
    println!("bogus: {:?}", c.call("bogus", Dict::new()));
    println!("typed: {:?} {:?} {:?}", c.tasks(), c.info(), c.help().map(|h| h.len()));
    let s = std::net::TcpStream::connect(m2.http_addr()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!("net: {:?}", c.connections());
    drop(s);
}
