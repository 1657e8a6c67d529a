//! The RPC of a standby node (`--wallet=postgres://...` with another node active): `getinfo`
//! says who it is and that it waits; every other command is refused with CLN's "shutting
//! down" code family rather than served from state another node owns.

use std::sync::{Arc, Mutex};

use fulgur_protocol::codec::{FrameDecoder, encode_frame};
use fulgur_protocol::error::codes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// What a standby's `getinfo` tells.
#[derive(Debug, Clone, Default)]
pub struct StandbyInfo {
    /// The node id (the same as the active node's: one `hsm_secret`).
    pub id: String,
    /// Who holds the lease now.
    pub active: String,
    /// The lease's epoch.
    pub epoch: i64,
    /// The network (`regtest`...).
    pub network: String,
}

/// The code of a command refused by a standby: `LIGHTNINGD` (-1), as CLN answers a command
/// it cannot serve in its current state.
pub const STANDBY_REFUSED: i64 = codes::LIGHTNINGD;

fn reply(req: &Value, info: &StandbyInfo) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    match method {
        "getinfo" => json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {
                "id": info.id,
                "role": "standby",
                "active": info.active,
                "epoch": info.epoch,
                "network": info.network,
            }
        }),
        _ => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": STANDBY_REFUSED,
                "message": format!(
                    "This node is a standby: {} is active (lease epoch {}); only getinfo is \
                     served until this node takes over",
                    info.active, info.epoch
                ),
            }
        }),
    }
}

async fn connection(mut stream: UnixStream, info: Arc<Mutex<StandbyInfo>>) {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.extend(buf.get(..n).unwrap_or_default());
        while let Some(v) = dec.next_value() {
            let out = match v {
                Ok(req) => {
                    let info = info.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    reply(&req, &info)
                }
                Err(e) => json!({
                    "jsonrpc": "2.0",
                    "id": null,
                    "error": {"code": codes::PARSE_ERROR, "message": e.to_string()},
                }),
            };
            if stream.write_all(&encode_frame(&out)).await.is_err() {
                return;
            }
        }
    }
}

/// Serves `listener` as a standby until `stop` turns true; `info` may change meanwhile.
pub async fn serve_standby(
    listener: UnixListener,
    info: Arc<Mutex<StandbyInfo>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(connection(stream, info.clone()));
                }
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getinfo_says_standby_and_the_rest_is_refused() {
        let info = StandbyInfo {
            id: "02ab".into(),
            active: "host:/a".into(),
            epoch: 3,
            network: "regtest".into(),
        };
        let r = reply(&json!({"id": 1, "method": "getinfo", "params": {}}), &info);
        assert_eq!(r["result"]["role"], "standby");
        assert_eq!(r["result"]["epoch"], 3);
        let r = reply(&json!({"id": "x", "method": "pay", "params": {}}), &info);
        assert_eq!(r["id"], "x");
        assert_eq!(r["error"]["code"], STANDBY_REFUSED);
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("standby")
        );
    }
}
