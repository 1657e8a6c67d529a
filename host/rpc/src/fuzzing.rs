//! Entry points for the fuzz targets in `fuzz/` (not an API). Each function feeds untrusted
//! bytes to the parsers the daemon runs on them, in the order the daemon runs them, and
//! panics only when an invariant of ours is broken: a panic here is a bug, whatever the input.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::BytesMut;
use fulgur_protocol::codec::{FrameError, JsonCodec};
use fulgur_protocol::hooks::{Hook, RpcCommandAction};
use fulgur_protocol::manifest::Manifest;
use fulgur_protocol::options::OptionType;
use fulgur_protocol::{Message, RpcError};
use serde_json::{Value, json};
use tokio_util::codec::Decoder;

use crate::config::{Network, RawOpt, Source};
use crate::hooks::{ChainEnd, Step};
use crate::rpc::{Reply, commands, params};

/// Splits a byte stream into JSON values as a connection's reader does (`limit` is the
/// reader's size limit); stops at the first framing error, which closes a connection.
fn frames(data: &[u8], limit: usize) -> (Vec<Value>, Option<FrameError>) {
    let mut codec = JsonCodec::new(limit);
    let mut buf = BytesMut::from(data);
    let mut out = vec![];
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// A reply frame must be one JSON object followed by `"\n\n"`, carrying the id it was given.
fn check_frame(id: &Value, reply: &Reply) {
    let frame = crate::rpc::response_frame(id, reply);
    let body = frame
        .strip_suffix(b"\n\n")
        .unwrap_or_else(|| panic!("reply frame without terminator"));
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("reply is not JSON: {e}"));
    assert_eq!(v.get("id"), Some(id), "reply carries another id");
    assert_eq!(v.get("jsonrpc"), Some(&json!("2.0")));
    assert!(
        v.get("result").is_some() != v.get("error").is_some(),
        "reply needs exactly one of result and error"
    );
}

/// The `lightning-rpc` socket: framing, CLN's request checks, the error replies, binding
/// params by name or position to a built-in command and the command's own parameter
/// checks (everything a request meets before it reaches the node's state).
pub fn rpc_requests(data: &[u8]) {
    let (values, err) = frames(data, crate::config::RpcLimits::default().max_request);
    if let Some(e) = err {
        let code = match e {
            FrameError::TooLarge { .. } => fulgur_protocol::error::codes::INVALID_REQUEST,
            _ => fulgur_protocol::error::codes::PARSE_ERROR,
        };
        check_frame(
            &Value::Null,
            &Reply::Err(RpcError::new(code, e.to_string())),
        );
    }
    for v in values {
        let (id, method) = match crate::rpc::check_request(&v) {
            Ok(checked) => checked,
            Err((id, why)) => {
                check_frame(&id, &Reply::Err(RpcError::invalid_request(why)));
                continue;
            }
        };
        let _ = crate::rpc::calling_plugin(&id);
        if let Some(f) = v.get("filter") {
            let _ = crate::rpc::apply_filter(&v, f);
        }
        let Some(cmd) = commands::find(&method) else {
            check_frame(&id, &Reply::Err(RpcError::unknown_method(&method)));
            continue;
        };
        let p = v.get("params").cloned().unwrap_or(Value::Null);
        match params::bind(cmd.params, &p, cmd.extra_params) {
            Err(e) => check_frame(&id, &Reply::Err(e)),
            Ok(bound) => {
                for spec in cmd.params {
                    let _ = bound.opt_str(spec.name);
                    let _ = bound.opt_bool(spec.name);
                    let _ = bound.opt_u64(spec.name);
                }
                if let Some(Err(e)) = commands::check_params(&method, &bound, Network::Regtest) {
                    check_frame(&id, &Reply::Err(e));
                }
            }
        }
    }
}

/// A plugin's stdout: framing with the plugin limit, the envelope, response outcomes, log
/// levels, a `getmanifest` answer read as the host reads it, and what the hook rules make
/// of any object as an answer to each hook.
pub fn plugin_messages(data: &[u8]) {
    let (values, _) = frames(data, crate::plugin::plugin::MAX_PLUGIN_MESSAGE);
    for v in values {
        if let Ok(m) = serde_json::from_value::<Manifest>(v.clone()) {
            manifest(&m, &[]);
        }
        match Message::from_value(v) {
            Ok(Message::Response(r)) => {
                let whole = match &r.outcome {
                    Ok(res) => json!({"result": res}),
                    Err(e) => json!({"error": e}),
                };
                let _ = crate::plugin::outcome(&whole);
                if let Ok(res) = &r.outcome {
                    if let Ok(m) = serde_json::from_value::<Manifest>(res.clone()) {
                        manifest(&m, &[]);
                    }
                    hook_answer_value(res);
                }
            }
            Ok(Message::Notification(n)) if n.method == "log" => {
                if let Some(l) = n.params.get("level").and_then(Value::as_str) {
                    let _ = crate::log::Level::parse(l);
                }
            }
            _ => {}
        }
    }
}

/// The node's own option names, as `fulgurd` gives them to the plugin host.
fn core_names() -> Vec<&'static str> {
    crate::config::CORE_OPTIONS.iter().map(|o| o.name).collect()
}

/// Registers a manifest's options in a fresh table (the host's own checks), with `raw`
/// values as if from the config files; then `init` values and `listconfigs` entries.
fn manifest(m: &Manifest, raw: &[RawOpt]) -> Option<crate::options::OptionTable> {
    for place in fulgur_protocol::manifest::FEATURE_PLACES {
        if let Ok(bits) = m.featurebits_at(place) {
            let _ = fulgur_protocol::manifest::or_featurebits(&bits, &[1, 0]);
        }
    }
    for h in &m.hooks {
        if let Some(hook) = Hook::from_name(h.name()) {
            let _ = hook.accepts_filters();
        }
    }
    let path = Path::new("/fuzz/plugin");
    let mut table = crate::options::OptionTable::new(raw, &core_names());
    table.register(path, &m.options, &[]).ok()?;
    let _ = table.init_options(path);
    for name in table.plugin_names() {
        let _ = table.render_plugin(&name);
    }
    Some(table)
}

/// One plugin's answer to every hook: the hook's rules, then what the node does with an
/// answer that stops the chain (the HTLC verdict and failure code, `rpc_command`'s action).
fn hook_answer_value(answer: &Value) {
    for hook in Hook::ALL {
        let step = crate::hooks::semantics(hook)(answer);
        if let (Hook::HtlcAccepted, Ok(Step::Continue(Some(changes)))) = (hook, &step) {
            // A `continue` with replacements, applied to a payload as the chain does.
            let asked = serde_json::json!({"onion": {"payload": ""}, "htlc": {}});
            let mut last = asked.clone();
            crate::hooks::apply_changes(&mut last, changes.clone());
            let _ = crate::plugin_port::htlc_verdict(ChainEnd::Default(last), &asked);
        }
        // A malformed answer is replaced by the hook's safe default, which must pass.
        let answer = match step {
            Ok(Step::Stop(a)) => a,
            Ok(Step::Continue(_)) => continue,
            Err(_) => match crate::hooks::semantics(hook)(&hook.safe_default()) {
                Ok(Step::Stop(a)) => a,
                Ok(Step::Continue(_)) => continue,
                Err(e) => panic!("the safe default of {hook} breaks its own rules: {e}"),
            },
        };
        match hook {
            Hook::HtlcAccepted => {
                let end = ChainEnd::Stopped {
                    plugin: "fuzz".into(),
                    answer: answer.clone(),
                };
                if let crate::lightning::htlcs::Verdict::Fail(msg) =
                    crate::plugin_port::htlc_verdict(end, &Value::Null)
                {
                    let _ = crate::lightning::htlcs::failure_code(msg.as_deref());
                }
            }
            Hook::InvoicePayment => {
                let msg = answer.get("failure_message").and_then(Value::as_str);
                let _ = crate::lightning::htlcs::failure_code(msg);
            }
            Hook::RpcCommand => {
                let action = RpcCommandAction::from_answer(&answer);
                assert!(
                    !matches!(action, Ok(RpcCommandAction::Continue) | Err(_)),
                    "rpc_command stopped on an answer that is not replace or return"
                );
            }
            _ => {}
        }
    }
}

/// A hook answer as a plugin sends it (the `result` of its response).
pub fn hook_answer(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        hook_answer_value(&v);
    }
}

/// The hook order: `data` describes up to 8 registrations with `before`/`after` lists; the
/// order must be a permutation that meets every constraint, or name a cycle.
pub fn hook_order(data: &[u8]) {
    const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8) + 1;
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| PathBuf::from(format!("/p/{}", NAMES[i])))
        .collect();
    let mut before = vec![vec![]; n];
    let mut after = vec![vec![]; n];
    for pair in rest.chunks(2) {
        let [a, b] = pair else { break };
        let (from, to) = (usize::from(a & 7) % n, usize::from(b & 7));
        // Bit 3: after instead of before; bit 4: a path instead of a name; bit 5 of `b`:
        // a name nobody has.
        let target = if b & 0x20 != 0 {
            "ghost".to_string()
        } else if a & 0x10 != 0 {
            format!("/p/{}", NAMES[to])
        } else {
            NAMES[to].to_string()
        };
        if a & 0x08 != 0 {
            after[from].push(target);
        } else {
            before[from].push(target);
        }
    }
    let regs: Vec<crate::hooks::Registration<'_>> = (0..n)
        .map(|i| crate::hooks::Registration {
            name: NAMES[i],
            path: &paths[i],
            before: &before[i],
            after: &after[i],
        })
        .collect();
    match crate::hooks::order(&regs) {
        Ok(order) => {
            let mut seen = order.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "not a permutation");
            let pos = |i: usize| order.iter().position(|&x| x == i).unwrap_or(usize::MAX);
            let refers = |r: &str, j: usize| r == NAMES[j] || Path::new(r) == paths[j];
            for i in 0..n {
                for j in 0..n {
                    if i == j {
                        continue;
                    }
                    if before[i].iter().any(|r| refers(r, j)) {
                        assert!(pos(i) < pos(j), "{i} must come before {j}");
                    }
                    if after[i].iter().any(|r| refers(r, j)) {
                        assert!(pos(j) < pos(i), "{i} must come after {j}");
                    }
                }
            }
        }
        Err(cycle) => assert!(!cycle.is_empty(), "a cycle names its plugins"),
    }
}

fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("FULGUR_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let d = base.join(format!("fulgur-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        d
    })
}

/// The configuration: `data` is command-line arguments (one per line) up to a NUL byte, then
/// the text of `<lightning-dir>/config`; `config::load` reads them as at start-up, then the
/// `listconfigs` rendering and the plugin option table see the result.
pub fn config(data: &[u8]) {
    let (args, file) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let dir = scratch_dir();
    if std::fs::write(dir.join("config"), file).is_err() {
        return;
    }
    let mut argv: Vec<String> = String::from_utf8_lossy(args)
        .lines()
        // Other files and directories would make runs depend on the machine.
        .filter(|a| !a.contains("conf") && !a.contains("lightning-dir"))
        .map(String::from)
        .collect();
    argv.push(format!("--lightning-dir={}", dir.display()));
    let Ok(crate::config::Invocation::Run(c) | crate::config::Invocation::Help(c)) =
        crate::config::load(&argv)
    else {
        return;
    };
    let _ = commands::listconfigs::render_core(&c);
    let table = crate::options::OptionTable::new(&c.plugin_opts, &core_names());
    let _ = table.unclaimed();
}

/// Plugin options end to end: a manifest's declarations with values from config lines,
/// then `setconfig` values checked, persisted to `config.setconfig` and read back as the
/// next start reads them, which must give the value that was set.
///
/// `data` is a JSON object `{"options": [decl...], "config": ["name=value"...],
/// "set": [[name, value]...]}`.
pub fn plugin_options(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(m) = serde_json::from_value::<Manifest>(json!({"options": v.get("options")})) else {
        return;
    };
    let file = PathBuf::from("/fuzz/config");
    let raw: Vec<RawOpt> = v
        .get("config")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .enumerate()
        .map(|(n, line)| {
            let (name, value) = match line.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (line.trim().to_string(), None),
            };
            RawOpt {
                name,
                value,
                source: Source::File(file.clone(), n + 1),
            }
        })
        .collect();
    let Some(mut table) = manifest(&m, &raw) else {
        return;
    };
    let sets = v.get("set").and_then(Value::as_array);
    let setconfig = scratch_dir().join("config.setconfig");
    for s in sets.into_iter().flatten() {
        let Some(name) = s.get(0).and_then(Value::as_str) else {
            continue;
        };
        let Ok((_, typed, sent)) = table.check_set(name, s.get(1)) else {
            continue;
        };
        let texts: Vec<Option<String>> = match &sent {
            None => vec![None],
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| Some(fulgur_protocol::options::value_to_text(i)))
                .collect(),
            Some(v) => vec![Some(fulgur_protocol::options::value_to_text(v))],
        };
        let _ = std::fs::remove_file(&setconfig);
        let Ok(source) = crate::core_options::persist_setconfig(&setconfig, name, &texts) else {
            continue;
        };
        // What the next start reads must be what was set.
        let back = crate::config::read_config_file(&setconfig)
            .ok()
            .flatten()
            .unwrap_or_default();
        let kind = m
            .options
            .iter()
            .find(|o| o.name == name)
            .map_or(OptionType::String, |o| o.kind);
        let reread: Vec<Value> = back
            .iter()
            .filter(|r| r.name == name)
            .filter_map(|r| kind.parse(r.value.as_deref()).ok())
            .collect();
        let others: Vec<&str> = back
            .iter()
            .filter(|r| r.name != name)
            .map(|r| r.name.as_str())
            .collect();
        assert!(
            others.is_empty(),
            "setconfig {name}={texts:?} wrote other options: {others:?}"
        );
        assert_eq!(
            reread, typed,
            "setconfig {name}={texts:?} reads back differently"
        );
        table.set(name, typed, source);
        let _ = table.render_plugin(name);
    }
}

/// CLN's runes: the first byte picks how the rest is read: as a rune's base64 text, or as
/// its bytes (authcode and restriction text, base64-encoded here so inputs get past the
/// alphabet), or as `createrune`'s `restrictions` and `checkrune`'s `params` (JSON
/// `[restrictions, params]`). A rune that reads re-encodes to itself, its restrictions
/// re-derived from a master are accepted by that master, and checking never panics.
pub fn runes(data: &[u8]) {
    use crate::lightning::runes::{Request, Restriction, Rune, base64url_decode, base64url_encode};
    use commands::runes::{JsonFields, restrictions_param};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    assert_eq!(
        base64url_decode(&base64url_encode(rest)).as_deref(),
        Some(rest)
    );
    let master = Rune::master(&[7; 32]);
    let check = |rune: &Rune, params: Option<&Value>| {
        let fields = JsonFields::new(params);
        let req = Request {
            now_nanos: 1_700_000_000_000_000_000,
            peer: Some("02aa"),
            method: Some("getinfo"),
            pnum: 1,
            last_used_nanos: Some(1_699_999_999_000_000_000),
            params: &fields,
        };
        let _ = rune.test(|alt| req.check(alt));
        let _ = rune.is_derived_from(&master);
        for r in rune.restrictions() {
            let _ = r.english();
            assert_eq!(
                Restriction::parse(&r.encode()).as_ref(),
                Ok(r),
                "restriction round trip"
            );
        }
    };
    let read = |rune: Rune| {
        let back = Rune::from_base64(&rune.to_base64());
        assert_eq!(back.as_ref(), Ok(&rune), "rune round trip");
        let _ = rune.unique_id_num();
        // The same restrictions under our master are ours.
        let mut ours = master.derive(1);
        for r in rune.restrictions().iter().filter(|r| !r.is_unique_id()) {
            let _ = ours.add_restriction(r.clone());
        }
        assert_eq!(ours.is_derived_from(&master), Ok(()));
        check(&rune, None);
    };
    match mode % 3 {
        0 => {
            if let Ok(rune) = Rune::from_base64(&String::from_utf8_lossy(rest)) {
                read(rune);
            }
        }
        1 => {
            if let Ok(rune) = Rune::from_base64(&base64url_encode(rest)) {
                read(rune);
            }
        }
        _ => {
            let Ok(Value::Array(v)) = serde_json::from_slice::<Value>(rest) else {
                return;
            };
            let mut args = serde_json::Map::new();
            if let Some(r) = v.first() {
                args.insert("restrictions".into(), r.clone());
            }
            let Ok(p) = params::bind(
                commands::runes::CREATERUNE.params,
                &Value::Object(args),
                false,
            ) else {
                return;
            };
            if let Ok(restrictions) = restrictions_param(&p) {
                let mut rune = master.derive(0);
                for r in restrictions {
                    if rune.add_restriction(r).is_err() {
                        return;
                    }
                }
                read(rune.clone());
                check(&rune, v.get(1));
            }
        }
    }
}

/// BOLT 11 invoices through `decode`, given as the string parameter.
pub fn bolt11(s: &str) {
    if let Ok(v) = commands::decode::decode(s) {
        assert_eq!(v["valid"], json!(true));
    }
}

/// BOLT 12 offers, invoice requests and invoices through `decode`. Byte 0 picks how the
/// rest is used: as the TLV stream of an offer, invoice request or invoice (bech32-encoded
/// here, as BOLT 12 strings have no checksum to get past), or as the string itself. What
/// reads writes back to the same bytes, and `decode` answers with the kind it read.
pub fn bolt12(data: &[u8]) {
    use fulgur_engine::bolt12::{self, Kind};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kind = match mode % 4 {
        0 => Kind::Offer,
        1 => Kind::InvoiceRequest,
        2 => Kind::Invoice,
        _ => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = commands::decode::decode(s);
            }
            return;
        }
    };
    let s = bolt12::encode(kind, rest);
    let read = bolt12::decode(&s);
    if let Ok(b) = &read {
        assert_eq!(b.kind, kind);
        assert_eq!(b.bytes(), rest, "round trip");
    }
    let answer = commands::decode::decode(&s);
    assert_eq!(answer.is_ok(), read.is_ok());
    if let Ok(v) = answer {
        let name = match kind {
            Kind::Offer => "bolt12 offer",
            Kind::InvoiceRequest => "bolt12 invoice_request",
            Kind::Invoice => "bolt12 invoice",
        };
        assert_eq!(v["type"], json!(name));
        assert!(v["valid"].is_boolean());
    }
}

/// zbase32 and `checkmessage`'s signature reading: decoding any string never panics,
/// encoding round-trips, and a signature that parses can be used for recovery.
pub fn zbase32(data: &[u8]) {
    use commands::sign::{parse_zbase, recover, zbase32_decode, zbase32_encode};
    let enc = zbase32_encode(data);
    assert_eq!(zbase32_decode(&enc).as_deref(), Some(data), "round trip");
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(bytes) = zbase32_decode(s) {
            assert!(bytes.len() <= s.len() * 5 / 8 + 1);
        }
        if let Ok(sig) = parse_zbase(s) {
            let _ = recover("fuzz", &sig);
        }
    }
}

/// PSBTs as the PSBT commands read them: any bytes (base64-encoded) decode or fail
/// cleanly, in version 0 or 2; what decodes re-encodes in both versions and reads back the
/// same.
pub fn psbt(data: &[u8]) {
    crate::rpc::psbt::fuzz(data);
}

/// The small parsers of option values and RPC parameters: the first byte picks one, the
/// rest is the text.
pub fn values(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    let s = s.as_ref();
    let json_value = serde_json::from_str::<Value>(s).ok();
    match which % 16 {
        0 => {
            for t in [
                OptionType::String,
                OptionType::StringConceal,
                OptionType::Int,
                OptionType::Bool,
                OptionType::Flag,
            ] {
                let _ = t.parse(Some(s));
                if let Some(v) = &json_value
                    && let Ok(typed) = t.parse_json(v)
                {
                    // Canonical form is a fixed point.
                    assert_eq!(t.parse_json(&typed).ok(), Some(typed.clone()));
                }
            }
        }
        1 => {
            if let Ok(m) = fulgur_protocol::amount::Msat::parse(s) {
                let again = fulgur_protocol::amount::Msat::parse(&format!("{}msat", m.0));
                assert_eq!(again, Ok(m));
            }
            if let Some(v) = &json_value {
                let _ = fulgur_protocol::amount::Msat::from_json(v);
            }
        }
        2 => {
            if let Ok(m) = crate::config::parse_msat(s) {
                assert_eq!(crate::config::parse_msat(&m.to_string()), Ok(m));
            }
        }
        3 => {
            let _ = crate::lightning::net::NetAddr::parse(s, crate::lightning::net::DEFAULT_PORT);
        }
        4 => {
            let _ = crate::plugin::wasm::SandboxRule::parse(s);
        }
        5 => {
            let _ = crate::log::LevelFilter::parse(s);
        }
        6 => {
            if let Some(scid) = crate::lightning::parse_scid(s) {
                let text = crate::lightning::scid_string(scid);
                assert_eq!(crate::lightning::parse_scid(&text), Some(scid));
            }
        }
        7 => {
            let _ = crate::lightning::graph::parse_exclusion(s);
        }
        8 => {
            let _ = Network::parse(s);
            let _ = crate::chain::settings::parse_cookie(s);
        }
        9 => {
            let _ = crate::lightning::htlcs::parse_hash(s);
            let _ = crate::lightning::htlcs::failure_code(Some(s));
        }
        10 => {
            if let Some(b) = fulgur_base::unhex(s) {
                assert_eq!(b.len() * 2, s.len());
            }
        }
        11 => {
            let _ = crate::chain::plugin_source::decode_block(s);
        }
        12 => {
            if let Some(v) = &json_value {
                let _ = crate::chain::backend::parse_blockchaininfo(v);
                let _ = crate::chain::backend::parse_getchaininfo(v);
                let _ = crate::chain::backend::parse_estimatefees(v);
            }
        }
        _ => {
            let _ = fulgur_protocol::jsonrpc::child_id(json_value.as_ref(), "cln", s, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Runs `target` on the seeds in `fuzz/seeds/<name>` and on cheap mutations of them (a
    /// byte changed, dropped or repeated): a smoke run without the instrumented build.
    fn seeds_and_mutations(name: &str, target: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds")
            .join(name);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .collect();
        assert!(seeds.len() >= 3);
        seeds.sort();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in &seeds {
            target(seed);
            for _ in 0..3000 {
                let mut m = seed.clone();
                let at = (next() as usize) % m.len();
                match next() % 3 {
                    0 => m[at] = next() as u8,
                    1 => drop(m.remove(at.max(1).min(m.len() - 1))),
                    _ => m.insert(at, m[at]),
                }
                target(&m);
            }
        }
    }

    #[test]
    fn runes_seeds_and_their_mutations_keep_the_invariants() {
        seeds_and_mutations("runes", super::runes);
    }

    #[test]
    fn bolt12_seeds_and_their_mutations_keep_the_invariants() {
        seeds_and_mutations("bolt12", super::bolt12);
    }
}
