use crate::tnetstring::*;

/// `levels` lists (or dicts, each holding its child under key `k`) nested around a
/// null, built front to back in linear time.
fn deeply_nested(levels: usize, dict: bool) -> Vec<u8> {
    let (key, tag): (&[u8], u8) = if dict { (b"1:k,", b'}') } else { (b"", b']') };
    // sizes[i]: the encoded size of the element nested i levels deep from the inside.
    let mut sizes = vec![3usize];
    for i in 0..levels {
        let payload = key.len() + sizes[i];
        sizes.push(payload.to_string().len() + 1 + payload + 1);
    }
    let mut out = Vec::with_capacity(sizes[levels]);
    for i in (0..levels).rev() {
        out.extend_from_slice(format!("{}:", key.len() + sizes[i]).as_bytes());
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"0:~");
    out.resize(out.len() + levels, tag);
    out
}

#[test]
fn raised_depth_limit_parses_copies_and_drops_without_recursion() {
    // Far beyond what a recursive parser survives on a 2 MiB test-thread stack.
    const LEVELS: usize = 1_000_000;
    for dict in [false, true] {
        let input = deeply_nested(LEVELS, dict);
        assert!(matches!(
            parse_with_max_depth(&input, LEVELS - 1),
            Err(Error::TooDeep { .. })
        ));
        let (value, rest) = parse_with_max_depth(&input, LEVELS).unwrap();
        assert!(rest.is_empty());
        let mut depth = 0;
        let mut at = &value;
        while let Some(inner) = at
            .as_list()
            .and_then(|l| l.first())
            .or_else(|| at.as_dict().and_then(|d| d.get("k")))
        {
            at = inner;
            depth += 1;
        }
        assert_eq!(depth, LEVELS);
        assert!(at.is_null());
        let owned: Value<'static> = value.into_owned();
        drop(input);
        drop(owned);
    }
    // A deep value built by hand drops without recursion too.
    let mut v = Value::Null;
    for _ in 0..LEVELS {
        v = Value::List(vec![v]);
    }
    drop(v);
}

#[test]
fn take_moves_a_value_out() {
    let mut v = Value::List(vec![Value::from("a"), Value::Integer(1)]);
    let Value::List(items) = &mut v else {
        panic!("a list")
    };
    let items = std::mem::take(items);
    assert_eq!(items.len(), 2);
    let mut d = Value::from(Dict::from_iter([("k", Value::from("v"))]));
    let taken = d.take();
    assert!(d.is_null());
    assert_eq!(
        taken
            .as_dict()
            .and_then(|d| d.get("k"))
            .and_then(Value::as_str),
        Some("v")
    );
}
