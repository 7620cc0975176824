use std::borrow::Cow;

use super::*;

#[test]
fn query_decoding() {
    assert_eq!(percent_decode("a%20b+c"), "a b c");
    assert_eq!(percent_decode("plain"), "plain");
    assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%4"), "%4");
    assert_eq!(percent_decode("%g1%41"), "%g1A");
    assert_eq!(percent_decode("%ff"), "\u{fffd}");
    assert_eq!(percent_decode("%C3%A9"), "é");
    assert_eq!(
        parse_query("a=1&&a=2&=x&k=v=w&%3D=%26"),
        [
            ("a".into(), "1".into()),
            ("a".into(), "2".into()),
            (String::new(), "x".into()),
            ("k".into(), "v=w".into()),
            ("=".into(), "&".into()),
        ]
    );
    assert!(parse_query("").is_empty());
}

#[test]
fn first_value_of_a_parameter() {
    assert_eq!(query_value("a=1&b=x+y%21&a=2", "a").as_deref(), Some("1"));
    assert_eq!(
        query_value("a=1&b=x+y%21&a=2", "b").as_deref(),
        Some("x y!")
    );
    // Names are decoded before they are compared.
    assert_eq!(
        query_value("caf%C3%A9=1&%3D=eq", "café").as_deref(),
        Some("1")
    );
    assert_eq!(query_value("%3D=eq", "=").as_deref(), Some("eq"));
    assert_eq!(query_value("flag&x=", "flag").as_deref(), Some(""));
    assert_eq!(query_value("flag&x=", "x").as_deref(), Some(""));
    assert_eq!(query_value("a=1", "b"), None);
    assert_eq!(query_value("", ""), None);
    assert_eq!(query_value("ab=1", "a"), None);
    // Nothing to decode: the value is borrowed from the query string.
    assert!(matches!(query_value("k=v", "k"), Some(Cow::Borrowed("v"))));
}
