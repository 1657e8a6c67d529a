//! A minimal HTTP/1.1 server for the JSON-RPC interface: POST with a Content-Length body, Basic
//! auth, keep-alive and pipelined requests, `Expect: 100-continue`. Status codes follow bitcoind:
//! 200 success, 401 bad credentials, 404 unknown method, 405 not a POST, 500 other errors.

use std::sync::Arc;

use bitcoin::base64::Engine;
use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::rpc::Rpc;

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Serves until the `stop` RPC is called or `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    rpc: Arc<Rpc>,
    credentials: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let expected = Arc::new(format!("Basic {}", BASE64.encode(credentials.as_bytes())));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let rpc = rpc.clone();
                    let expected = expected.clone();
                    tokio::spawn(async move {
                        let _ = handle_connection(stream, rpc, expected).await;
                    });
                }
                Err(e) => {
                    eprintln!("devchain: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = rpc.stop.notified() => break,
            _ = &mut shutdown => break,
        }
    }
}

/// A request head: what the server needs of the request line and headers.
pub struct Head {
    method: String,
    http10: bool,
    content_length: usize,
    authorization: Option<String>,
    connection: Option<String>,
    expect_continue: bool,
    chunked: bool,
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses a request head (request line and headers, without the blank line); `None` when
/// it is malformed.
pub fn parse_head(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_string();
    let _path = parts.next()?;
    let version = parts.next()?;
    let mut head = Head {
        method,
        http10: version == "HTTP/1.0",
        content_length: 0,
        authorization: None,
        connection: None,
        expect_continue: false,
        chunked: false,
    };
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.content_length = value.parse().ok()?,
            "authorization" => head.authorization = Some(value.to_string()),
            "connection" => head.connection = Some(value.to_ascii_lowercase()),
            "expect" => head.expect_continue = value.eq_ignore_ascii_case("100-continue"),
            "transfer-encoding" => head.chunked = !value.eq_ignore_ascii_case("identity"),
            _ => {}
        }
    }
    Some(head)
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Error",
    }
}

async fn write_response(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    keep_alive: bool,
    extra: &str,
) -> std::io::Result<()> {
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\n{content_type}{extra}Content-Length: {}\r\nConnection: {}\r\n\r\n",
        status_text(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

fn credentials_match(header: Option<&str>, expected: &str) -> bool {
    let Some(h) = header else { return false };
    let a = h.trim().as_bytes();
    let b = expected.as_bytes();
    // Constant time over the expected length.
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ byte) as usize;
    }
    diff == 0
}

async fn handle_connection(
    mut stream: TcpStream,
    rpc: Arc<Rpc>,
    expected: Arc<String>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read the head (more requests may already be buffered when the client pipelines).
        let head_end = loop {
            if let Some(pos) = find_head_end(&buf) {
                break pos;
            }
            if buf.len() > MAX_HEAD {
                return write_response(&mut stream, 431, b"", false, "").await;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(head) = std::str::from_utf8(&buf[..head_end])
            .ok()
            .and_then(parse_head)
        else {
            return write_response(&mut stream, 400, b"", false, "").await;
        };
        if head.chunked {
            return write_response(&mut stream, 501, b"", false, "").await;
        }
        if head.content_length > MAX_BODY {
            return write_response(&mut stream, 413, b"", false, "").await;
        }
        let body_start = head_end + 4;
        if head.expect_continue && buf.len() < body_start + head.content_length {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while buf.len() < body_start + head.content_length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf[body_start..body_start + head.content_length].to_vec();
        buf.drain(..body_start + head.content_length);

        let keep_alive = match head.connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => !head.http10,
        };
        if !credentials_match(head.authorization.as_deref(), &expected) {
            write_response(
                &mut stream,
                401,
                b"",
                keep_alive,
                "WWW-Authenticate: Basic realm=\"jsonrpc\"\r\n",
            )
            .await?;
        } else if head.method != "POST" {
            write_response(&mut stream, 405, b"", keep_alive, "").await?;
        } else {
            let worker = rpc.clone();
            let (status, out) = tokio::task::spawn_blocking(move || worker.handle_body(&body))
                .await
                .unwrap_or((500, b"{\"result\":null,\"error\":{\"code\":-32603,\"message\":\"internal error\"},\"id\":null}".to_vec()));
            write_response(&mut stream, status, &out, keep_alive, "").await?;
            if rpc.stop_requested() {
                rpc.stop.notify_one();
                return Ok(());
            }
        }
        if !keep_alive {
            return Ok(());
        }
    }
}
