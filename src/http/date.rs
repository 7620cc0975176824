//! The `Date` header value (RFC 9110 §6.6.1), formatted at most once per second per thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) is always this long for years
/// 1000..=9999.
pub(super) const DATE_LEN: usize = 29;

thread_local! {
    /// The second last formatted and its text; each thread keeps its own so that
    /// encoding never waits on a lock.
    static LAST: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// The current time as an IMF-fixdate, or `None` when the clock is before 1970 or past
/// year 9999 (no `Date` is better than a wrong one; RFC 9110 allows it without a clock).
pub(super) fn now() -> Option<[u8; DATE_LEN]> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            last.1 = text.as_bytes().try_into().ok()?;
            last.0 = secs;
        }
        Some(last.1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_imf_fixdate() {
        let date = super::now().expect("a clock after 1970");
        let text = std::str::from_utf8(&date).unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
