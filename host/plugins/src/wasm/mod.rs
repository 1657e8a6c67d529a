//! WASM plugins: core wasm modules that speak the plugin protocol through function calls
//! instead of pipes (the ABI is in docs/WASM.md). This file holds what does not need the
//! engine: recognising a module and the operator's sandbox rules. The engine itself
//! (wasmtime) is in `runtime`, behind the `wasm` cargo feature; this is the only module
//! that knows wasmtime.

// Without the engine, only module detection and option parsing are used.
#![cfg_attr(not(feature = "wasm"), allow(dead_code))]

use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

#[cfg(all(test, feature = "wasm"))]
mod engine_tests;
#[cfg(feature = "wasm")]
pub(super) mod runtime;

/// The first bytes of every binary wasm module.
pub const MAGIC: &[u8; 4] = b"\0asm";

/// Whether `path` is a wasm module (by its magic bytes, whatever its name).
pub fn is_wasm(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == MAGIC)
}

/// Node RPC methods a WASM plugin may call unless the operator says otherwise: read-only
/// ones.
pub const DEFAULT_ALLOWED_RPC: &[&str] = &[
    "getinfo",
    "listpeers",
    "listpeerchannels",
    "listclosedchannels",
    "listchannels",
    "listnodes",
    "listfunds",
    "listinvoices",
    "listpays",
    "listsendpays",
    "listforwards",
    "listdatastore",
    "listconfigs",
    "feerates",
    "decode",
    "decodepay",
    "help",
];

/// Hooks a WASM plugin may register unless the operator grants more: those whose answer
/// can only be `continue` (or is ignored), so that a guest can watch but never move money,
/// change or answer a request, refuse a payment, a channel or a peer, or stop the node.
/// Everything else (`rpc_command`, `htlc_accepted`, `invoice_payment`, `peer_connected`,
/// `openchannel`, `openchannel2`, `openchannel2_changed`, `openchannel2_sign`,
/// `rbf_channel`, `db_write`, `onion_message_recv`, `onion_message_recv_secret`) needs
/// `--wasm-sandbox=PLUGIN:hooks=...` or `add-hooks=...`.
pub const DEFAULT_ALLOWED_HOOKS: &[&str] = &["custommsg", "commitment_revocation", "recover"];

/// Failures of one plugin within [`Sandbox::failure_window`] that disable it.
pub const DEFAULT_MAX_FAILURES: u32 = 3;

/// Default wall-clock limit of one call into a guest (beside its fuel).
pub const DEFAULT_WALL: Duration = Duration::from_secs(2);

/// What one WASM plugin may do: resolved from the `--wasm-sandbox` rules for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Largest linear memory, bytes.
    pub memory_bytes: usize,
    /// Fuel (roughly, wasm instructions) for each call into the guest.
    pub fuel: u64,
    /// Wall-clock time one call into the guest may take (checked about every
    /// [`runtime`]'s tick while guest code runs); past it the call traps.
    pub wall: Duration,
    /// Node RPC methods it may call; anything else is answered with an error. A `replace`
    /// answer to `rpc_command` must name one of them too.
    pub allow_rpc: Vec<String>,
    /// Hooks it may register; a manifest with any other hook is refused.
    pub hooks: Vec<String>,
    /// Whether it may leave an `htlc_accepted` call unanswered when the call returns (hold
    /// the HTLC and answer later). Without it the host answers with the safe default.
    pub hold: bool,
    /// Failures (trap, budget overrun, garbage) within `failure_window` that disable it.
    pub max_failures: u32,
    /// See `max_failures`.
    pub failure_window: Duration,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            memory_bytes: 64 << 20,
            fuel: 500_000_000,
            wall: DEFAULT_WALL,
            allow_rpc: DEFAULT_ALLOWED_RPC.iter().map(|s| s.to_string()).collect(),
            hooks: DEFAULT_ALLOWED_HOOKS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            hold: false,
            max_failures: DEFAULT_MAX_FAILURES,
            failure_window: Duration::from_secs(60),
        }
    }
}

impl Sandbox {
    /// Whether the plugin may call `method` on the node.
    pub fn may_call(&self, method: &str) -> bool {
        self.allow_rpc.iter().any(|m| m == method || m == "*")
    }

    /// Whether the plugin may register `hook`.
    pub fn may_hook(&self, hook: &str) -> bool {
        self.hooks.iter().any(|h| h == hook || h == "*")
    }
}

/// One `--wasm-sandbox=PLUGIN:KEY=VALUE` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRule {
    /// The plugin's file name (`x.wasm`) or `*` for every WASM plugin.
    pub plugin: String,
    key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    MemoryMb(usize),
    Fuel(u64),
    WallMs(u64),
    AllowRpc(Vec<String>),
    AddRpc(Vec<String>),
    Hooks(Vec<String>),
    AddHooks(Vec<String>),
    Hold(bool),
    MaxFailures(u32),
    FailureWindow(Duration),
}

impl SandboxRule {
    /// Parses `PLUGIN:KEY=VALUE`. Keys: `memory-mb`, `fuel`, `wall-ms`, `allow-rpc` (a
    /// comma list replacing the defaults; empty: none), `add-rpc` (a comma list added),
    /// `hooks` and `add-hooks` (the same for hooks; names are checked), `hold`
    /// (`true`/`false`), `max-failures`, `failure-window-secs`.
    pub fn parse(s: &str) -> Result<SandboxRule, String> {
        let bad = |why: &str| format!("wasm-sandbox: '{s}': {why}");
        let (plugin, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected PLUGIN:KEY=VALUE"))?;
        let (key, value) = rest
            .split_once('=')
            .ok_or_else(|| bad("expected PLUGIN:KEY=VALUE"))?;
        if plugin.is_empty() {
            return Err(bad("empty plugin name (use * for all)"));
        }
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        };
        // The value as a whole number in `range`; `why` otherwise.
        let number = |range: RangeInclusive<u64>, why: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| bad(why))
        };
        let key = match key {
            "memory-mb" => Key::MemoryMb(number(1..=4096, "memory-mb must be 1..4096")? as usize),
            "fuel" => Key::Fuel(number(1..=u64::MAX, "fuel must be a positive integer")?),
            "wall-ms" => Key::WallMs(number(1..=3_600_000, "wall-ms must be 1..3600000")?),
            "allow-rpc" => Key::AllowRpc(list(value)),
            "add-rpc" => Key::AddRpc(list(value)),
            "hooks" | "add-hooks" => {
                let hooks = list(value);
                if let Some(h) = hooks.iter().find(|h| {
                    h.as_str() != "*" && fulgur_protocol::hooks::Hook::from_name(h).is_none()
                }) {
                    return Err(bad(&format!("unknown hook '{h}'")));
                }
                if key == "hooks" {
                    Key::Hooks(hooks)
                } else {
                    Key::AddHooks(hooks)
                }
            }
            "hold" => Key::Hold(match value {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(bad("hold must be true or false")),
            }),
            "max-failures" => Key::MaxFailures(number(
                1..=u64::from(u32::MAX),
                "max-failures must be a positive integer",
            )? as u32),
            "failure-window-secs" => Key::FailureWindow(Duration::from_secs(number(
                1..=u64::MAX,
                "failure-window-secs must be a positive integer",
            )?)),
            other => return Err(bad(&format!("unknown key '{other}'"))),
        };
        Ok(SandboxRule {
            plugin: plugin.to_string(),
            key,
        })
    }
}

/// The sandbox of the plugin named `name`: the defaults, then every rule for `*` or for
/// `name`, in the order given.
pub fn sandbox_for(rules: &[SandboxRule], name: &str) -> Sandbox {
    let mut s = Sandbox::default();
    for r in rules.iter().filter(|r| r.plugin == "*" || r.plugin == name) {
        match &r.key {
            Key::MemoryMb(m) => s.memory_bytes = m << 20,
            Key::Fuel(f) => s.fuel = *f,
            Key::WallMs(ms) => s.wall = Duration::from_millis(*ms),
            Key::AllowRpc(l) => s.allow_rpc = l.clone(),
            Key::AddRpc(l) => s.allow_rpc.extend(l.iter().cloned()),
            Key::Hooks(l) => s.hooks = l.clone(),
            Key::AddHooks(l) => s.hooks.extend(l.iter().cloned()),
            Key::Hold(h) => s.hold = *h,
            Key::MaxFailures(n) => s.max_failures = *n,
            Key::FailureWindow(w) => s.failure_window = *w,
        }
    }
    s
}

/// The method a WASM guest calls to be woken up later: the host answers it after
/// `params.ms` milliseconds (at most [`MAX_TIMER`]).
pub const TIMER_METHOD: &str = "wasm_timer";

/// Longest timer a guest may ask for.
pub const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order_for_the_named_plugin_only() {
        let rules: Vec<SandboxRule> = [
            "*:memory-mb=16",
            "policy.wasm:hold=true",
            "policy.wasm:allow-rpc=getinfo",
            "policy.wasm:add-rpc=datastore, deldatastore",
            "policy.wasm:add-hooks=htlc_accepted",
            "other.wasm:fuel=5",
            "other.wasm:hooks=",
            "other.wasm:wall-ms=250",
        ]
        .iter()
        .map(|r| SandboxRule::parse(r).unwrap_or_else(|e| panic!("{e}")))
        .collect();
        let p = sandbox_for(&rules, "policy.wasm");
        assert_eq!(p.memory_bytes, 16 << 20);
        assert!(p.hold);
        assert_eq!(p.allow_rpc, vec!["getinfo", "datastore", "deldatastore"]);
        assert!(p.may_call("datastore") && !p.may_call("pay"));
        assert_eq!(p.fuel, Sandbox::default().fuel);
        let o = sandbox_for(&rules, "other.wasm");
        assert_eq!(o.fuel, 5);
        assert!(!o.hold && o.may_call("getinfo") && !o.may_call("withdraw"));
        assert_eq!(o.wall, Duration::from_millis(250));
        assert_eq!(p.wall, DEFAULT_WALL);
        // Hooks: the default grant lets a guest watch, not decide; grants add to it.
        assert!(p.may_hook("htlc_accepted") && p.may_hook("custommsg"));
        assert!(!p.may_hook("rpc_command"));
        assert!(o.hooks.is_empty() && !o.may_hook("custommsg"));
    }

    #[test]
    fn no_hook_that_moves_money_or_changes_a_request_is_granted_by_default() {
        let s = Sandbox::default();
        for h in [
            "rpc_command",
            "htlc_accepted",
            "invoice_payment",
            "peer_connected",
            "openchannel",
            "openchannel2",
            "openchannel2_changed",
            "openchannel2_sign",
            "rbf_channel",
            "db_write",
            "onion_message_recv",
            "onion_message_recv_secret",
        ] {
            assert!(!s.may_hook(h), "{h} granted by default");
        }
        for h in DEFAULT_ALLOWED_HOOKS {
            assert!(fulgur_protocol::hooks::Hook::from_name(h).is_some(), "{h}");
        }
    }

    #[test]
    fn malformed_rules_are_refused() {
        for r in [
            "nocolon",
            "x.wasm:memory-mb",
            "x.wasm:memory-mb=0",
            "x.wasm:fuel=-1",
            "x.wasm:hold=maybe",
            "x.wasm:sockets=true",
            "x.wasm:hooks=htlc_accepted,not_a_hook",
            "x.wasm:wall-ms=0",
            ":fuel=1",
        ] {
            assert!(SandboxRule::parse(r).is_err(), "{r} accepted");
        }
    }

    #[test]
    fn magic_bytes_not_names_make_a_module() {
        let dir = std::env::temp_dir().join(format!("fulgur-wasm-magic-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let a = dir.join("plugin-without-extension");
        let b = dir.join("fake.wasm");
        std::fs::write(&a, b"\0asm\x01\0\0\0").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&b, b"#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(is_wasm(&a));
        assert!(!is_wasm(&b));
        assert!(!is_wasm(&dir.join("missing")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
