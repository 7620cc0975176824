//! http (skeleton)
