//! websocket (skeleton)
