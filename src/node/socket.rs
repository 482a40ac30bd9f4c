//! Socket adoption: duplicating the file descriptor of a TCP socket that Node upgraded, so the
//! Rust runtime owns a copy while Node destroys its own.
//! Must not read or write the socket: the viewer task does.

use napi::{Error, Result};

use super::invalid;

#[cfg(unix)]
pub(super) fn dup_tcp_socket(fd: i32) -> Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(invalid(format!("invalid file descriptor {fd}")));
    }
    // SAFETY: fcntl with F_DUPFD_CLOEXEC only reads `fd`; a bad fd yields -1 (EBADF).
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(Error::from_reason(format!(
            "cannot duplicate socket fd {fd}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `dup` is a new descriptor that nothing else owns; the TcpStream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(dup) };
    let mut sock_type: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `sock_type`.
    let rc = unsafe {
        libc::getsockopt(
            dup,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut sock_type as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || sock_type != libc::SOCK_STREAM || stream.peer_addr().is_err() {
        return Err(invalid(format!("fd {fd} is not a connected TCP socket")));
    }
    Ok(stream)
}

#[cfg(not(unix))]
pub(super) fn dup_tcp_socket(_fd: i32) -> Result<std::net::TcpStream> {
    Err(Error::from_reason(
        "socket adoption by file descriptor is not supported on this platform",
    ))
}
