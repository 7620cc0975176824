//! reply (skeleton)
