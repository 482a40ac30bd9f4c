//! RFC 6455 WebSocket, server side: [`codec`] (frames both ways, close codes) and
//! [`handshake`] (the key check and the `101` answer).
//! Must not know the application protocol carried inside.

pub mod codec;
pub mod handshake;
