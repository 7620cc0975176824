//! The sender of a request: borrowed from the message as parsed, and shared with the
//! connection's id once owned, so that keeping a request or answering it costs no copy of it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone)]
pub(crate) enum Sender<'a> {
    Borrowed(&'a str),
    Shared(Arc<str>),
}

impl Sender<'_> {
    /// The same text, owned: a shared sender is only counted once more.
    pub(crate) fn into_owned(self) -> Sender<'static> {
        Sender::Shared(self.into_shared())
    }

    /// The text as an `Arc<str>`, allocated only when it was borrowed.
    pub(crate) fn into_shared(self) -> Arc<str> {
        match self {
            Sender::Borrowed(text) => Arc::from(text),
            Sender::Shared(text) => text,
        }
    }

    pub(crate) fn shared(&self) -> Arc<str> {
        match self {
            Sender::Borrowed(text) => Arc::from(*text),
            Sender::Shared(text) => text.clone(),
        }
    }
}

impl<'a> From<Cow<'a, str>> for Sender<'a> {
    fn from(text: Cow<'a, str>) -> Self {
        match text {
            Cow::Borrowed(text) => Sender::Borrowed(text),
            Cow::Owned(text) => Sender::Shared(Arc::from(text)),
        }
    }
}

impl Deref for Sender<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Sender::Borrowed(text) => text,
            Sender::Shared(text) => text,
        }
    }
}

impl PartialEq for Sender<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Sender<'_> {}

impl fmt::Debug for Sender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
