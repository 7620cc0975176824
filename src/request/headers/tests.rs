use super::*;
use crate::request::Request;

#[test]
fn headers_set_push_and_iterate() {
    let mut h = Headers::new();
    assert!(h.is_empty());
    h.push("a", "1");
    h.push("a", "2");
    h.set("b", "x");
    h.set("b", String::from("y"));
    h.set("c", HeaderValue::Many(vec!["p".into(), "q".into()]));
    assert_eq!(h.len(), 3);
    assert_eq!(h.all("A").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(h.first("b"), Some("y"));
    assert_eq!(h.get("c").map(HeaderValue::len), Some(2));
    assert_eq!(h.get_exact("B"), None);
    assert_eq!(h.all("c").rev().collect::<Vec<_>>(), ["q", "p"]);
    let names: Vec<&str> = h.iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let owned: Headers<'static> = h.clone().into_owned();
    assert_eq!(owned, h);
    let mut req = Request::new("s", 1, "/");
    req.headers_mut().push("x", "1");
    assert_eq!(req.header("X"), Some("1"));
}

#[test]
fn many_pushes_stay_in_order_and_merge_by_exact_name() {
    const N: usize = 100_000;
    let mut req = Request::new("s", 1, "/");
    for i in 0..N {
        req = req.with_header(format!("x-h{i}"), "v");
    }
    // Repeats of early and late names merge into lists across the index threshold.
    req = req
        .with_header("x-h0", "again")
        .with_header(format!("x-h{}", N - 1), "again")
        .with_header("X-H1", "other case");
    let headers = req.headers();
    assert_eq!(headers.len(), N + 1);
    assert_eq!(headers.all("x-h0").collect::<Vec<_>>(), ["v", "again"]);
    assert_eq!(
        headers.all(&format!("x-h{}", N - 1)).collect::<Vec<_>>(),
        ["v", "again"]
    );
    assert_eq!(headers.all("x-h1").collect::<Vec<_>>(), ["v"]);
    assert_eq!(headers.iter().last().map(|(k, _)| k), Some("X-H1"));
}

#[test]
fn set_and_push_find_parsed_headers() {
    // Parsed entries (appended raw) are found by a later push or set, index or not.
    for count in [3, INDEX_FROM * 2] {
        let mut h = Headers::new();
        for i in 0..count {
            h.append_raw(format!("h{i}").into(), HeaderValue::from("p"));
        }
        h.push("h1", "q");
        h.set("h2", "r");
        h.push("new", "n");
        assert_eq!(h.len(), count + 1);
        assert_eq!(h.all("h1").collect::<Vec<_>>(), ["p", "q"]);
        assert_eq!(h.first("h2"), Some("r"));
        let owned = h.clone().into_owned();
        assert_eq!(owned, h);
        let mut owned = owned;
        owned.push("new", "m");
        assert_eq!(owned.all("new").collect::<Vec<_>>(), ["n", "m"]);
    }
}
