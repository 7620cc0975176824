//! request (skeleton)
