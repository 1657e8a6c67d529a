//! Chained hooks: the order in which plugins are asked, and the rules for their answers.
//!
//! The order is a stable topological sort: registration order, refined by each
//! registration's `before`/`after` lists (CLN's rules: names with a `/` match a plugin's
//! path, others its file name; unknown names are ignored). A cycle is an error naming the
//! plugins in it. Running a chain is in [`crate::PluginHost::hook`]; what an
//! answer means is decided by a per-hook [`Interpret`] function, and a malformed answer
//! becomes the hook's safe default instead of aborting the node as CLN does.

use std::path::Path;

use fulgur_protocol::hooks::Hook;

use serde_json::Value;

/// What to do after one plugin's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Ask the next plugin, with these changes to the payload if given: an object whose keys
    /// are JSON pointers into the payload (`/onion/payload`) and whose values replace what
    /// is there ([`apply_changes`]).
    Continue(Option<Value>),
    /// The hook's outcome is decided by this answer; later plugins are not asked.
    Stop(Value),
}

/// Reads one answer; `Err` says why it is malformed.
pub type Interpret = fn(&Value) -> Result<Step, String>;

/// The outcome of a whole chain.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainEnd {
    /// Every plugin continued (or none is registered): do the default, with the payload as
    /// the last plugin left it.
    Default(Value),
    /// A plugin decided.
    Stopped {
        /// Its short name.
        plugin: String,
        /// Its answer (or the safe default that replaced a malformed one).
        answer: Value,
    },
    /// The deadline passed while `plugin` was thinking; the core must act by itself.
    DeadlineExceeded {
        /// The plugin that did not answer in time.
        plugin: String,
    },
}

/// `{"result":"continue"}` continues, any other `result` string stops: the rule of
/// `peer_connected`, `invoice_payment`, `openchannel`, `custommsg` and the
/// onion-message hooks.
pub fn continue_or_stop(answer: &Value) -> Result<Step, String> {
    match answer.get("result").and_then(Value::as_str) {
        Some("continue") => Ok(Step::Continue(None)),
        Some(_) => Ok(Step::Stop(answer.clone())),
        None => Err("answer has no 'result' string".into()),
    }
}

/// `rpc_command`: continue, or stop with a `replace` or `return`.
pub fn rpc_command(answer: &Value) -> Result<Step, String> {
    use fulgur_protocol::hooks::RpcCommandAction;
    match RpcCommandAction::from_answer(answer)? {
        RpcCommandAction::Continue => Ok(Step::Continue(None)),
        _ => Ok(Step::Stop(answer.clone())),
    }
}

fn result_str(answer: &Value) -> Result<&str, String> {
    answer
        .get("result")
        .and_then(Value::as_str)
        .ok_or_else(|| "answer has no 'result' string".to_string())
}

/// `htlc_accepted`: `continue`, `fail` with `failure_message` or `failure_onion`, or
/// `resolve` with a 32-byte hex `payment_key`.
pub fn htlc_accepted(answer: &Value) -> Result<Step, String> {
    let is_hex = |k: &str, len: Option<usize>| {
        answer.get(k).and_then(Value::as_str).is_some_and(|h| {
            h.len() % 2 == 0
                && h.bytes().all(|b| b.is_ascii_hexdigit())
                && len.is_none_or(|l| h.len() == l)
        })
    };
    match result_str(answer)? {
        "continue" => htlc_replacements(answer),
        "fail" if is_hex("failure_message", None) || is_hex("failure_onion", None) => {
            Ok(Step::Stop(answer.clone()))
        }
        "fail" => Err("'fail' needs a hex failure_message or failure_onion".into()),
        "resolve" if is_hex("payment_key", Some(64)) => Ok(Step::Stop(answer.clone())),
        "resolve" => Err("'resolve' needs a 32-byte hex payment_key".into()),
        other => Err(format!("unknown result '{other}'")),
    }
}

/// The replacements an `htlc_accepted` `continue` may carry, as changes to the payload for
/// the next plugin and the core: `payload` (hex) → `/onion/payload`, `forward_to` (a
/// 32-byte channel id) → `/forward_to`, `extra_tlvs` (hex) → `/htlc/extra_tlvs`,
/// `invoice_msat` (a number or `"<n>msat"`) → `/invoice_msat`.
fn htlc_replacements(answer: &Value) -> Result<Step, String> {
    let hex_of = |k: &str, len: Option<usize>| -> Result<Option<Value>, String> {
        match answer.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(h))
                if h.len() % 2 == 0
                    && h.bytes().all(|b| b.is_ascii_hexdigit())
                    && len.is_none_or(|l| h.len() == l) =>
            {
                Ok(Some(Value::String(h.to_ascii_lowercase())))
            }
            Some(other) => Err(format!("'{k}' must be hex, not {other}")),
        }
    };
    let mut changes = serde_json::Map::new();
    for (field, pointer, len) in [
        ("payload", "/onion/payload", None),
        ("forward_to", "/forward_to", Some(64)),
        ("extra_tlvs", "/htlc/extra_tlvs", None),
    ] {
        if let Some(v) = hex_of(field, len)? {
            changes.insert(pointer.to_string(), v);
        }
    }
    match answer.get("invoice_msat") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let msat = v
                .as_u64()
                .or_else(|| v.as_str()?.strip_suffix("msat")?.parse().ok())
                .ok_or_else(|| format!("'invoice_msat' must be an amount in msat, not {v}"))?;
            changes.insert("/invoice_msat".into(), Value::from(msat));
        }
    }
    Ok(Step::Continue(
        (!changes.is_empty()).then_some(Value::Object(changes)),
    ))
}

/// Applies a `continue`'s changes (JSON pointer → value) to a hook's payload; a pointer
/// whose parent is not an object in the payload is ignored.
pub fn apply_changes(payload: &mut Value, changes: Value) {
    let Value::Object(changes) = changes else {
        return;
    };
    for (pointer, value) in changes {
        let Some((parent, key)) = pointer.rsplit_once('/') else {
            continue;
        };
        if let Some(Value::Object(obj)) = payload.pointer_mut(parent) {
            obj.insert(key.to_string(), value);
        }
    }
}

/// `invoice_payment`: `continue`, `reject`, or CLN's legacy `{failure_message}`.
pub fn invoice_payment(answer: &Value) -> Result<Step, String> {
    if answer.get("result").is_none()
        && answer
            .get("failure_message")
            .and_then(Value::as_str)
            .is_some()
    {
        return Ok(Step::Stop(answer.clone()));
    }
    match result_str(answer)? {
        "continue" => Ok(Step::Continue(None)),
        "reject" => Ok(Step::Stop(answer.clone())),
        other => Err(format!("unknown result '{other}'")),
    }
}

fn one_of(answer: &Value, stop: &[&str]) -> Result<Step, String> {
    match result_str(answer)? {
        "continue" => Ok(Step::Continue(None)),
        r if stop.contains(&r) => Ok(Step::Stop(answer.clone())),
        other => Err(format!("unknown result '{other}'")),
    }
}

/// `peer_connected`: `continue` or `disconnect`.
pub fn peer_connected(answer: &Value) -> Result<Step, String> {
    one_of(answer, &["disconnect"])
}

/// `openchannel`, `openchannel2`, `rbf_channel`: `continue` or `reject`. A `continue` may
/// carry CLN's `close_to` (an address), `mindepth` (blocks) and `reserve` (satoshis, as a
/// number or `"<n>sat"`/`"<n>msat"`), which become changes to `/openchannel/<field>` for
/// the next plugin and the node.
pub fn channel_open(answer: &Value) -> Result<Step, String> {
    let terms = ["close_to", "mindepth", "reserve"];
    let given = |k: &&&str| !matches!(answer.get(**k), None | Some(Value::Null));
    if result_str(answer)? != "continue" {
        if let Some(k) = terms.iter().find(given) {
            return Err(format!("a rejection cannot also set '{k}'"));
        }
        return one_of(answer, &["reject"]);
    }
    let mut changes = serde_json::Map::new();
    if let Some(v) = answer.get("close_to").filter(|v| !v.is_null()) {
        let addr = v
            .as_str()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("'close_to' must be an address, not {v}"))?;
        changes.insert("/openchannel/close_to".into(), Value::from(addr));
    }
    if let Some(v) = answer.get("mindepth").filter(|v| !v.is_null()) {
        let depth = v
            .as_u64()
            .filter(|d| u32::try_from(*d).is_ok())
            .ok_or_else(|| format!("'mindepth' must be a number of blocks, not {v}"))?;
        changes.insert("/openchannel/mindepth".into(), Value::from(depth));
    }
    if let Some(v) = answer.get("reserve").filter(|v| !v.is_null()) {
        let sat = v
            .as_u64()
            .or_else(|| {
                let s = v.as_str()?;
                match s.strip_suffix("msat") {
                    Some(m) => m
                        .parse::<u64>()
                        .ok()
                        .filter(|m| m % 1000 == 0)
                        .map(|m| m / 1000),
                    None => s.strip_suffix("sat").unwrap_or(s).parse().ok(),
                }
            })
            .ok_or_else(|| format!("'reserve' must be an amount in satoshis, not {v}"))?;
        changes.insert("/openchannel/reserve".into(), Value::from(sat));
    }
    Ok(Step::Continue(
        (!changes.is_empty()).then_some(Value::Object(changes)),
    ))
}

/// Hooks that must answer `continue` (`custommsg`, `recover`, the PSBT steps
/// of v2 opens).
pub fn must_continue(answer: &Value) -> Result<Step, String> {
    one_of(answer, &[])
}

/// `db_write`: `continue` lets the transaction commit; any other answer (an error, a
/// malformed one, the safe default) stops the chain, and the write fails.
pub fn db_write(answer: &Value) -> Result<Step, String> {
    match answer.get("result").and_then(Value::as_str) {
        Some("continue") => Ok(Step::Continue(None)),
        _ => Ok(Step::Stop(answer.clone())),
    }
}

/// `commitment_revocation`: the answer is ignored, every plugin is called.
pub fn ignored(_answer: &Value) -> Result<Step, String> {
    Ok(Step::Continue(None))
}

/// The answer rules of each hook: adding a hook is a line here and a variant in
/// `fulgur_protocol::hooks::Hook`.
pub fn semantics(hook: Hook) -> Interpret {
    match hook {
        Hook::RpcCommand => rpc_command,
        Hook::HtlcAccepted => htlc_accepted,
        Hook::InvoicePayment => invoice_payment,
        Hook::PeerConnected => peer_connected,
        Hook::Openchannel | Hook::Openchannel2 | Hook::RbfChannel => channel_open,
        Hook::DbWrite => db_write,
        Hook::Custommsg | Hook::Recover | Hook::Openchannel2Changed | Hook::Openchannel2Sign => {
            must_continue
        }
        Hook::CommitmentRevocation => ignored,
        Hook::OnionMessageRecv | Hook::OnionMessageRecvSecret => continue_or_stop,
    }
}

/// How a chain ends when its plugin is stopped with the call while the node shuts down,
/// instead of asking the next plugin (which is being stopped too) and letting the event
/// through: `rpc_command` answers CLN's "shutting down" error, so a held command never
/// runs on the way out; the others take their safe default (channel opens rejected,
/// `peer_connected`, `custommsg` and `invoice_payment` continue). `None` for
/// `htlc_accepted`, whose caller keeps a held HTLC for the next start.
pub fn shutdown_answer(hook: Hook) -> Option<Value> {
    match hook {
        Hook::HtlcAccepted => None,
        Hook::RpcCommand => Some(serde_json::json!({"return": {"error": {
            "code": fulgur_protocol::error::codes::LIGHTNINGD_SHUTDOWN,
            "message": "lightningd is shutting down",
        }}})),
        h => Some(h.safe_default()),
    }
}

/// One registration as the sorter sees it.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// The plugin's file name.
    pub name: &'a str,
    /// The plugin's path.
    pub path: &'a Path,
    /// Plugins that must come after this one.
    pub before: &'a [String],
    /// Plugins that must come before this one.
    pub after: &'a [String],
}

fn matches(reference: &str, r: &Registration<'_>) -> bool {
    if reference.contains('/') {
        Path::new(reference) == r.path
    } else {
        reference == r.name
    }
}

/// Orders registrations given in registration order. Returns indices into `regs`, or
/// the names of the plugins caught in a dependency cycle.
pub fn order(regs: &[Registration<'_>]) -> Result<Vec<usize>, Vec<String>> {
    let n = regs.len();
    let mut edges = vec![vec![]; n];
    let mut indegree = vec![0usize; n];
    let mut add = |from: usize, to: usize, edges: &mut Vec<Vec<usize>>| {
        if from != to && !edges[from].contains(&to) {
            edges[from].push(to);
            indegree[to] += 1;
        }
    };
    for (i, r) in regs.iter().enumerate() {
        for b in r.before {
            for (j, other) in regs.iter().enumerate() {
                if matches(b, other) {
                    add(i, j, &mut edges);
                }
            }
        }
        for a in r.after {
            for (j, other) in regs.iter().enumerate() {
                if matches(a, other) {
                    add(j, i, &mut edges);
                }
            }
        }
    }
    // Kahn's algorithm, always taking the earliest-registered ready plugin: stable.
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(next) = (0..n).find(|&i| !done[i] && indegree[i] == 0) else {
            let mut stuck: Vec<String> = (0..n)
                .filter(|&i| !done[i])
                .map(|i| regs[i].name.to_string())
                .collect();
            stuck.dedup();
            return Err(stuck);
        };
        done[next] = true;
        out.push(next);
        for &to in &edges[next] {
            indegree[to] -= 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg<'a>(
        name: &'a str,
        path: &'a Path,
        before: &'a [String],
        after: &'a [String],
    ) -> Registration<'a> {
        Registration {
            name,
            path,
            before,
            after,
        }
    }

    #[test]
    fn stable_without_constraints() {
        let none: Vec<String> = vec![];
        let regs = [
            reg("a", Path::new("/a"), &none, &none),
            reg("b", Path::new("/b"), &none, &none),
        ];
        assert_eq!(order(&regs), Ok(vec![0, 1]));
    }

    #[test]
    fn before_and_after_refine_order() {
        let none: Vec<String> = vec![];
        let c_before_a = vec!["a".to_string()];
        let b_after_c = vec!["/x/c".to_string()];
        let regs = [
            reg("a", Path::new("/x/a"), &none, &none),
            reg("b", Path::new("/x/b"), &none, &b_after_c),
            reg("c", Path::new("/x/c"), &c_before_a, &none),
        ];
        assert_eq!(order(&regs), Ok(vec![2, 0, 1]));
    }

    #[test]
    fn unknown_names_are_ignored_and_cycles_named() {
        let none: Vec<String> = vec![];
        let before_b = vec!["b".to_string(), "ghost".to_string()];
        let before_a = vec!["a".to_string()];
        let regs = [
            reg("a", Path::new("/a"), &before_b, &none),
            reg("b", Path::new("/b"), &before_a, &none),
            reg("c", Path::new("/c"), &none, &none),
        ];
        assert_eq!(order(&regs), Err(vec!["a".to_string(), "b".to_string()]));
    }

    #[test]
    fn answer_rules() {
        assert_eq!(
            continue_or_stop(&json!({"result":"continue"})),
            Ok(Step::Continue(None))
        );
        assert!(matches!(
            continue_or_stop(&json!({"result":"disconnect"})),
            Ok(Step::Stop(_))
        ));
        assert!(continue_or_stop(&json!({"nope":1})).is_err());
        assert!(matches!(
            rpc_command(&json!({"return":{"result":{}}})),
            Ok(Step::Stop(_))
        ));
        assert!(rpc_command(&json!({"replace":"x"})).is_err());
        assert!(matches!(
            htlc_accepted(&json!({"result":"fail","failure_message":"2002"})),
            Ok(Step::Stop(_))
        ));
        assert!(htlc_accepted(&json!({"result":"fail"})).is_err());
        let step = channel_open(
            &json!({"result":"continue","close_to":"bcrt1q","mindepth":0,
            "reserve":"2000000msat"}),
        );
        let Ok(Step::Continue(Some(changes))) = step else {
            panic!("{step:?}")
        };
        let mut payload = json!({"openchannel":{"id":"x"}});
        apply_changes(&mut payload, changes);
        assert_eq!(
            payload,
            json!({"openchannel":{"id":"x","close_to":"bcrt1q","mindepth":0,"reserve":2000}})
        );
        assert_eq!(
            channel_open(&json!({"result":"continue"})),
            Ok(Step::Continue(None))
        );
        assert!(channel_open(&json!({"result":"reject","close_to":"bcrt1q"})).is_err());
        assert!(channel_open(&json!({"result":"continue","reserve":"1sats"})).is_err());
        assert!(channel_open(&json!({"result":"continue","mindepth":-1})).is_err());
        let step = htlc_accepted(&json!({"result":"continue","forward_to":"AB".repeat(32),
            "invoice_msat":"1000msat","payload":"0102"}));
        let Ok(Step::Continue(Some(changes))) = step else {
            panic!("{step:?}")
        };
        let mut payload = json!({"onion":{"payload":""},"htlc":{},"forward_to":"x"});
        apply_changes(&mut payload, changes);
        assert_eq!(
            payload,
            json!({"onion":{"payload":"0102"},"htlc":{},"forward_to":"ab".repeat(32),
                "invoice_msat":1000})
        );
        assert!(htlc_accepted(&json!({"result":"continue","forward_to":"00"})).is_err());
        assert!(htlc_accepted(&json!({"result":"continue","invoice_msat":"x"})).is_err());
        assert!(htlc_accepted(&json!({"result":"continue","payload":5})).is_err());
        assert!(htlc_accepted(&json!({"result":"resolve","payment_key":"00"})).is_err());
        assert!(matches!(
            invoice_payment(&json!({"failure_message":"2002"})),
            Ok(Step::Stop(_))
        ));
        assert!(must_continue(&json!({"result":"stop"})).is_err());
        for h in Hook::ALL {
            let safe = semantics(h)(&h.safe_default());
            assert!(
                safe.is_ok(),
                "safe default of {h} must satisfy its own rules"
            );
            if let Some(answer) = shutdown_answer(h) {
                assert!(
                    semantics(h)(&answer).is_ok(),
                    "shutdown answer of {h} must satisfy its own rules"
                );
            }
        }
        // A command held by a plugin stopped at shutdown is answered, not run.
        assert!(matches!(
            rpc_command(&shutdown_answer(Hook::RpcCommand).unwrap_or_default()),
            Ok(Step::Stop(_))
        ));
        assert_eq!(shutdown_answer(Hook::HtlcAccepted), None);
    }
}
