//! Where messages come from and go to. The dispatch core only sees a stream of decoded
//! JSON values in and a queue of JSON values out; adapters here attach that to stdin/stdout
//! (the normal case), to any pair of async byte streams (tests use `tokio::io::duplex`), or
//! to plain channels (a future in-process/WASM host).
//!
//! Output is written by a single writer task: every message is one compact JSON object
//! followed by `"\n\n"`, so concurrent handlers can never interleave bytes.

use std::pin::Pin;

use fulgur_protocol::codec::{FrameError, JsonCodec, encode_frame};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

type Incoming = Pin<Box<dyn Stream<Item = Result<Value, FrameError>> + Send>>;

/// A bidirectional message channel to the node. Create one with `Transport::stdio` (not on
/// wasm32), [`Transport::from_io`] or [`Transport::from_channels`] and hand it to
/// [`crate::Builder::configure`].
pub struct Transport {
    pub(crate) incoming: Incoming,
    pub(crate) outgoing: mpsc::UnboundedSender<Value>,
    writer: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    /// Whether the plugin's calls to the node go out on this transport (see
    /// [`Transport::rpc_through_transport`]).
    pub(crate) rpc_through: bool,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("has_writer_task", &self.writer.is_some())
            .field("rpc_through", &self.rpc_through)
            .finish()
    }
}

impl Transport {
    /// The plugin's stdin and stdout, as the node runs it. Must be called inside a tokio
    /// runtime. Not on wasm32 (a guest is driven by [`crate::WasmGuest`]).
    ///
    /// When they are pipes (always, under a node), they are driven by the runtime's
    /// reactor directly; tokio's `stdin()`/`stdout()` would hand every read and write to
    /// the blocking thread pool and back, which costs a thread switch per message.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stdio() -> Self {
        match pipes() {
            Ok((rx, tx)) => Self::from_io(rx, tx),
            Err(_) => Self::from_io(tokio::io::stdin(), tokio::io::stdout()),
        }
    }

    /// Any async reader (messages from the node) and writer (messages to the node). Spawns
    /// the writer task, so it must be called inside a tokio runtime.
    pub fn from_io<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let incoming = FramedRead::new(reader, JsonCodec::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (finish_tx, finish_rx) = oneshot::channel();
        let task = tokio::spawn(write_loop(writer, rx, finish_rx));
        Transport {
            incoming: Box::pin(incoming),
            outgoing: tx,
            writer: Some((task, finish_tx)),
            rpc_through: false,
        }
    }

    /// Messages already decoded, carried by channels: the SDK receives from `incoming` and
    /// sends whole JSON messages (no framing) on `outgoing`. The input ends when every
    /// sender of `incoming` is dropped.
    pub fn from_channels(
        incoming: mpsc::Receiver<Value>,
        outgoing: mpsc::UnboundedSender<Value>,
    ) -> Self {
        let stream = futures::stream::unfold(incoming, |mut rx| async move {
            rx.recv().await.map(|v| (Ok(v), rx))
        });
        Transport {
            incoming: Box::pin(stream),
            outgoing,
            writer: None,
            rpc_through: false,
        }
    }

    /// Makes [`crate::Plugin::rpc`] send the plugin's calls to the node as requests on this
    /// transport instead of over the node's RPC socket: the node's responses (messages with
    /// the request's id and a `result` or an `error`, no `method`) arrive on the input and
    /// are handed to the waiting callers once the plugin is started. This is what a WASM
    /// guest does ([`crate::WasmGuest`] sets it; on wasm32 it is always on).
    pub fn rpc_through_transport(mut self) -> Self {
        self.rpc_through = true;
        self
    }

    /// The next message from the node; `None` at end of input.
    pub(crate) async fn next(&mut self) -> Option<Result<Value, FrameError>> {
        self.incoming.next().await
    }

    /// Writes out everything queued so far, then stops the writer task.
    pub(crate) async fn finish(&mut self) {
        if let Some((task, finish)) = self.writer.take() {
            let _ = finish.send(());
            let _ = task.await;
        }
    }
}

/// Non-blocking handles on duplicates of fd 0 and 1, if both are pipes.
#[cfg(not(target_arch = "wasm32"))]
fn pipes() -> std::io::Result<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd;
    let input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let output = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let rx = tokio::net::unix::pipe::Receiver::from_file(input)?;
    let tx = tokio::net::unix::pipe::Sender::from_file(output)?;
    Ok((rx, tx))
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Value>,
    mut finish: oneshot::Receiver<()>,
) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(v) => {
                    // Everything already queued goes out in one write.
                    buf.extend_from_slice(&encode_frame(&v));
                    while let Ok(more) = rx.try_recv() {
                        buf.extend_from_slice(&encode_frame(&more));
                    }
                    if write_all(&mut writer, &mut buf).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            _ = &mut finish => {
                while let Ok(v) = rx.try_recv() {
                    buf.extend_from_slice(&encode_frame(&v));
                }
                if write_all(&mut writer, &mut buf).await.is_err() {
                    return;
                }
                break;
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_all<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let r = writer.write_all(buf).await;
    buf.clear();
    r?;
    writer.flush().await
}
