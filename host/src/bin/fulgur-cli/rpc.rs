//! A blocking JSON-RPC client for fulgurd's UNIX socket.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use fulgur_protocol::codec::{FrameDecoder, FrameError};
use serde_json::Value;

use crate::CliError;

/// Largest reply accepted: far beyond any real answer, but bounded.
const MAX_REPLY: usize = 1 << 30;

/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const SUN_PATH_MAX: usize = 108;

/// One message read from the node, with the exact bytes it arrived as.
pub struct Frame {
    pub value: Value,
    pub text: Vec<u8>,
}

pub struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// The bytes the decoder holds, mirrored so that a frame's text can be recovered.
    pending: Vec<u8>,
    buf: Vec<u8>,
}

/// Connects to the socket. A path too long for `sun_path` is reached by moving into its
/// directory and connecting with the bare file name, as `lightning-cli` does.
pub fn connect(path: &Path) -> Result<UnixStream, ConnectError> {
    if path.as_os_str().as_bytes().len() < SUN_PATH_MAX {
        return UnixStream::connect(path).map_err(ConnectError::Io);
    }
    let name = path.file_name().ok_or(ConnectError::TooLong)?;
    if name.as_bytes().len() >= SUN_PATH_MAX {
        return Err(ConnectError::TooLong);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::env::set_current_dir(dir).map_err(ConnectError::Io)?;
    }
    UnixStream::connect(name).map_err(ConnectError::Io)
}

pub enum ConnectError {
    /// Even the file name alone does not fit in `sun_path`.
    TooLong,
    Io(io::Error),
}

impl Connection {
    pub fn new(stream: UnixStream) -> Self {
        Connection {
            stream,
            decoder: FrameDecoder::new(MAX_REPLY),
            pending: Vec::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Writes one request, compact, with no terminator (like `lightning-cli`).
    pub fn send(&mut self, request: &Value) -> Result<(), CliError> {
        let bytes = serde_json::to_vec(request)
            .map_err(|e| CliError::Talk(format!("cannot encode the request: {e}")))?;
        self.stream
            .write_all(&bytes)
            .map_err(|e| CliError::Talk(format!("writing the request to fulgurd: {e}")))
    }

    /// The next complete JSON value from the node.
    pub fn next_frame(&mut self) -> Result<Frame, CliError> {
        loop {
            match self.decoder.next_value() {
                Some(Ok(value)) => {
                    // `pending` is the decoder's buffer preceded by the whitespace it has
                    // dropped between messages, so the frame is what left the buffer, less
                    // that whitespace.
                    let consumed = self.pending.len().saturating_sub(self.decoder.buffered());
                    let mut text: Vec<u8> = self.pending.drain(..consumed).collect();
                    trim_leading_ws(&mut text);
                    return Ok(Frame { value, text });
                }
                Some(Err(FrameError::TooLarge { limit })) => {
                    return Err(CliError::Talk(format!(
                        "reply from fulgurd is larger than {limit} bytes"
                    )));
                }
                Some(Err(e)) => {
                    let shown =
                        String::from_utf8_lossy(&self.pending[..self.pending.len().min(200)])
                            .into_owned();
                    return Err(CliError::Talk(format!(
                        "malformed reply from fulgurd ({e}): '{shown}'"
                    )));
                }
                None => {}
            }
            let n = loop {
                match self.stream.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(CliError::Talk(format!(
                            "reading the reply from fulgurd: {e}"
                        )));
                    }
                }
            };
            if n == 0 {
                return Err(CliError::Talk(
                    "fulgurd closed the connection before replying".into(),
                ));
            }
            self.decoder.extend(&self.buf[..n]);
            self.pending.extend_from_slice(&self.buf[..n]);
        }
    }
}

fn trim_leading_ws(text: &mut Vec<u8>) {
    let n = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
    text.drain(..n);
}
